"""Converters from the raw records of known datasets to canonical rows, one small function each.

A converter takes one raw record and returns the canonical rows it yields (a tree yields many).
It raises `RowError` only when the record cannot be converted at all; rows it can build but that
are unusable (an empty completion, an empty response) are left for validation, which names them.

Dialogue presets (hh_rlhf, oasst_trees) give plain-text transcripts by default and TRL's
conversational rows (message lists) when `conversational` is true, i.e. when the tokenizer has a
chat template (`data.conversational: auto`) or the config asks for it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from .rows import KINDS, RowError

Row = dict[str, Any]
Converter = Callable[..., list[Row]]  # (raw, conversational=False, kind=...) -> rows

# HH-RLHF and OpenAssistant dialogues are rendered in the same Anthropic-style transcript, so one
# reward model can be trained on both: prompts end with ASSISTANT, responses start with a space.
HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"

_SENTENCE_END = re.compile(r"[.!?](?=\s)")


def _text_field(raw: Row, name: str) -> str:
    if name not in raw:
        raise RowError("missing_field", name, "missing (expected a string)")
    value = raw[name]
    if not isinstance(value, str):
        raise RowError("wrong_type", name, f"expected a string, got {type(value).__name__}")
    return value


def canonical(raw: Row, conversational: bool = False, kind: str = "") -> list[Row]:
    """Rows already in our schema: validation alone decides whether they are usable."""
    return [raw]


def tinystories(raw: Row, conversational: bool = False, kind: str = "sft") -> list[Row]:
    """`{"text": story}` -> prompt = the first sentence, completion = the rest (starting with its space).

    A sentence ends at . ! or ? followed by whitespace; prompt + completion == story exactly. A
    one-sentence story gets an empty completion, which validation reports as `empty_text`.
    """
    story = _text_field(raw, "text")
    end = _SENTENCE_END.search(story)
    cut = end.end() if end else len(story)
    return [{"prompt": story[:cut], "completion": story[cut:]}]


def hh_rlhf(raw: Row, conversational: bool = False, kind: str = "pair") -> list[Row]:
    """`{"chosen": dialogue, "rejected": dialogue}` -> prompt up to the last shared "\\n\\nAssistant:".

    Both dialogues normally share everything before their last assistant turn; when they do not
    (5 of the 2,000 harmless-base pairs), the prompt is the longest common prefix ending in
    "\\n\\nAssistant:", so prompt + chosen and prompt + rejected are always the original dialogues.
    """
    chosen, rejected = _text_field(raw, "chosen"), _text_field(raw, "rejected")
    c, r = chosen.rfind(ASSISTANT), rejected.rfind(ASSISTANT)
    if c >= 0 and c == r and chosen[:c] == rejected[:r]:
        cut = c + len(ASSISTANT)
    else:
        cut = os.path.commonprefix([chosen, rejected]).rfind(ASSISTANT)
        if cut < 0:
            raise RowError(
                "bad_value",
                "chosen",
                f"expected a dialogue sharing a prefix ending in {ASSISTANT!r} with rejected",
            )
        cut += len(ASSISTANT)
    row = {"prompt": chosen[:cut], "chosen": chosen[cut:], "rejected": rejected[cut:]}
    if conversational:  # the same split, as turns: the prompt's turns, then the assistant's replies
        row = {"prompt": transcript_turns(row["prompt"]),
               "chosen": transcript_turns(ASSISTANT + row["chosen"], awaiting_reply=False),
               "rejected": transcript_turns(ASSISTANT + row["rejected"], awaiting_reply=False)}
    return [row]


_TURN = re.compile(r"\n\n(Human|Assistant):")


def transcript_turns(text: str, awaiting_reply: bool = True) -> list[Row]:
    """"\\n\\nHuman: a\\n\\nAssistant: b" -> [{user: a}, {assistant: b}]; a trailing empty
    "\\n\\nAssistant:" (a prompt `awaiting_reply`) is dropped: the generation prompt stands for it."""
    parts = _TURN.split(text)
    turns = [{"role": "user" if who == "Human" else "assistant", "content": body.strip()}
             for who, body in zip(parts[1::2], parts[2::2], strict=True)]
    if awaiting_reply and turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        turns.pop()
    return turns


def oasst_trees(raw: Row, conversational: bool = False, kind: str = "ranked") -> list[Row]:
    """An oasst1 message tree -> ranked rows (kind ranked) or conversations (kind sft).

    ranked: one row per message with >= 2 ranked assistant replies.

    prompt = the conversation down to that message as "\\n\\nHuman: ...\\n\\nAssistant: ..." ending in
    "\\n\\nAssistant:"; responses = " " + each ranked reply's text (the space as in HH-RLHF);
    ranks = the raters' ranks (0 = best). Deleted messages and their subtrees are skipped, and so
    are rankings of prompter replies: we rank assistant responses only.
    sft: one `messages` row per assistant reply that its raters put first (rank 0, or the only reply):
    the conversation from the root down to that reply, as in the OASST-trained SFT sets.
    Conversational ranked rows carry the prompt as turns and each response as an assistant turn.
    """
    if kind == "sft":
        return _oasst_conversations(raw)
    if not isinstance(raw.get("prompt"), dict):
        raise RowError("missing_field", "prompt", "expected the tree's root message (an object)")
    rows: list[Row] = []
    stack: list[tuple[Row, str]] = [(raw["prompt"], "")]
    while stack:
        message, history = stack.pop()
        history += _turn(message)
        replies = [r for r in message.get("replies") or [] if isinstance(r, dict) and not r.get("deleted")]
        ranked = [r for r in replies if r.get("rank") is not None]
        if len(ranked) >= 2 and all(r.get("role") == "assistant" for r in ranked):
            row = {"prompt": history + ASSISTANT, "responses": [" " + _text_field(r, "text") for r in ranked],
                   "ranks": [r["rank"] for r in ranked]}
            if conversational:
                row["prompt"] = transcript_turns(row["prompt"])
                row["responses"] = [[{"role": "assistant", "content": t.strip()}] for t in row["responses"]]
            rows.append(row)
        stack.extend((r, history) for r in reversed(replies))  # reversed: rows come out in tree order
    return rows


def _oasst_conversations(raw: Row) -> list[Row]:
    if not isinstance(raw.get("prompt"), dict):
        raise RowError("missing_field", "prompt", "expected the tree's root message (an object)")
    rows: list[Row] = []
    stack: list[tuple[Row, list[Row]]] = [(raw["prompt"], [])]
    while stack:
        message, history = stack.pop()
        _turn(message)  # checks the role and the text
        role = "user" if message["role"] == "prompter" else "assistant"
        history = history + [{"role": role, "content": message["text"]}]
        if role == "assistant":
            rows.append({"messages": history})
        replies = [r for r in message.get("replies") or [] if isinstance(r, dict) and not r.get("deleted")]
        answers = [r for r in replies if r.get("role") == "assistant"]
        best = [r for r in answers if r.get("rank") == 0] or (answers if len(answers) == 1 else [])
        follow = [r for r in replies if r.get("role") != "assistant"] + best
        stack.extend((r, history) for r in reversed(follow))
    return rows


def _turn(message: Row) -> str:
    role = message.get("role")
    if role not in ("prompter", "assistant"):
        raise RowError("bad_value", "role", f"expected 'prompter' or 'assistant', got {role!r}")
    return (HUMAN if role == "prompter" else ASSISTANT) + " " + _text_field(message, "text")


class Preset(NamedTuple):
    convert: Converter
    kinds: tuple[str, ...]  # the row kinds it can produce (`data.kind` must be one of them)


# `data.format` -> its converter and kinds: the one list; DataConfig accepts exactly these formats.
# A new preset is a converter above and one entry here.
PRESETS: dict[str, Preset] = {
    "canonical": Preset(canonical, KINDS),  # rows already in our schema: any kind
    "tinystories": Preset(tinystories, ("sft",)),
    "hh_rlhf": Preset(hh_rlhf, ("pair", "unpaired")),  # unpaired: each pair split (rlhf.data.unpaired)
    "oasst_trees": Preset(oasst_trees, ("ranked", "sft", "unpaired")),
}
