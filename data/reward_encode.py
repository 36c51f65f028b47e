"""The reward model's tokenisation: `RewardEncoder` (pairs and ranked lists framed for a
sequence-classification head, the prompt losing its START first in one window shared by every
response of a row) and its `SequenceFrame` (BOS/EOS the scored sequence carries). Part of the one
tokenisation path (`rlhf.data.encode`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rlhf.errors import UserError

from . import chat
from .encode import (
    CHAT_FRAME_KEY,
    Encoded,
    Encoder,
    Row,
    as_turn,
    common_prefix,
    is_conversational,
    responses_of,
)


@dataclass(frozen=True)
class SequenceFrame:
    """Special tokens around every reward-model sequence, and the content budget they leave.

    ``[tokenizer's own leading specials] content [EOS] [tokenizer's own trailing specials]``:
    BERT adds ``[CLS] … [SEP]`` itself and has no BOS/EOS; a causal LM's tokenizer gets EOS (a fixed
    last token for the classification head to read, as TRL's RewardTrainer appends) unless its own
    specials already hold it. BOS is the tokenizer's own: `model.add_bos` (rlhf.models) makes it
    prepend one, so a GPT-2 vocabulary with `add_bos: false` is framed as TRL frames it. Conversations
    get only the tokenizer's own specials: their template writes BOS and the end-of-turn markers.
    """

    prefix: list[int]
    suffix: list[int]

    @classmethod
    def of(cls, tokenizer: Any, add_eos: bool = True) -> SequenceFrame:
        bare = tokenizer("a", add_special_tokens=False, verbose=False)["input_ids"]
        full = tokenizer("a", add_special_tokens=True, verbose=False)["input_ids"]
        at = next((i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare), None)
        prefix, suffix = (list(full[:at]), list(full[at + len(bare) :])) if at is not None else ([], [])
        eos = tokenizer.eos_token_id
        if add_eos and eos is not None and eos not in suffix:
            suffix = [eos] + suffix
        return cls(prefix, suffix)

    def budget(self, max_length: int) -> int:
        return max_length - len(self.prefix) - len(self.suffix)


def fit(prompt: Sequence[int], responses: Sequence[Sequence[int]], budget: int) -> tuple[list[int], list[list[int]]]:
    """Cut the prompt (from its start) and the responses (from their end) to fit `budget` tokens each.

    The prompt window is shared by all responses (they are judged against the same context): it
    keeps its last ``budget - longest response`` tokens; a response longer than the budget keeps
    its first `budget` tokens and the prompt is then dropped."""
    kept = [list(r[:budget]) for r in responses]
    room = budget - max(len(r) for r in kept)
    return (list(prompt[max(0, len(prompt) - room) :]) if room > 0 else []), kept


class RewardEncoder(Encoder):
    """Pairs and ranked lists for a sequence-classification reward model (see `fit`, `SequenceFrame`)."""

    kinds = ("pair", "ranked")

    def __init__(self, tokenizer: Any, max_length: int):
        super().__init__(tokenizer, max_length)
        self.frame = SequenceFrame.of(tokenizer)
        own = (getattr(tokenizer, "init_kwargs", None) or {}).get(CHAT_FRAME_KEY)  # a reward artifact's (rlhf.run.portable)
        self.chat_frame = (SequenceFrame(list(own["prefix"]), list(own["suffix"])) if own
                           else SequenceFrame.of(tokenizer, add_eos=False))
        eos = tokenizer.eos_token_id
        if eos is not None and tokenizer.pad_token_id == eos and eos in self.frame.suffix:
            name = getattr(tokenizer, "name_or_path", "the model")
            raise UserError(f"tokenizer of {name}: its pad token is its EOS ({tokenizer.eos_token!r}): a reward head "
                            "reads the last non-pad token, so the EOS every sequence ends with would be invisible; "
                            "load it through rlhf (model.pad_token=null gives it a pad that is not EOS) or retrain "
                            "this reward model with this version")
        if self.frame.budget(max_length) < 1:
            raise UserError(f"model.max_length: {max_length} leaves no room for text after the tokenizer's "
                            f"{len(self.frame.prefix) + len(self.frame.suffix)} special tokens")
        self.rule = (f"the prompt loses its start first to fit max_length {max_length} (one window for all "
                     "responses of a row); a response longer than that keeps its start")

    def split(self, rows: Sequence[Row]) -> list[tuple[list[int], list[list[int]], SequenceFrame] | Encoded]:
        """Per row: (prompt ids, response ids, frame) before truncation, or an Encoded problem."""
        plain = [i for i, r in enumerate(rows) if not is_conversational(r)]
        prompts = self._text_ids([rows[i]["prompt"] for i in plain], specials=False)
        flat = [resp for i in plain for resp in responses_of(rows[i])]
        flat_ids = iter(self._text_ids(flat, specials=False))
        parts: dict[int, tuple[list[int], list[list[int]], SequenceFrame]] = {}
        bos = self.tok.bos_token_id
        for i, p in zip(plain, prompts, strict=True):
            if bos is not None and p[:1] == [bos] and bos in self.frame.prefix:
                p = p[1:]  # the text carries the BOS the frame writes: one BOS
            parts[i] = (p, [next(flat_ids) for _ in responses_of(rows[i])], self.frame)
        for i, row in enumerate(rows):
            if i not in parts:
                parts[i] = self._guard(self._conversation, row)
        return [parts[i] for i in range(len(rows))]

    def _conversation(self, row: Row) -> tuple[list[int], list[list[int]], SequenceFrame]:
        p = chat.ids(self.tok, row["prompt"], add_generation_prompt=True)
        full = [chat.ids(self.tok, row["prompt"] + resp) for resp in responses_of(row)]
        n = min(common_prefix(p, f) for f in full)
        frame, prompt = self.chat_frame, p[:n]
        own = frame.prefix
        if own and prompt[: len(own)] == own:  # the template already wrote the tokenizer's own specials
            prompt = prompt[len(own) :]
        bos = self.tok.bos_token_id
        if bos is not None and prompt[:1] == [bos]:  # keep BOS at position 0 whatever the prompt loses
            prompt, frame = prompt[1:], SequenceFrame(frame.prefix + [bos], frame.suffix)
        return prompt, [f[n:] for f in full], frame

    def encode(self, rows: Sequence[Row]) -> list[Encoded]:
        out: list[Encoded] = []
        for row, part in zip(rows, self.split(rows), strict=True):
            if isinstance(part, Encoded):
                out.append(part)
                continue
            prompt, responses, frame = part
            budget = frame.budget(self.max_length)
            kept_prompt, kept = fit(prompt, responses, budget)
            seqs = [frame.prefix + kept_prompt + r + frame.suffix for r in kept]
            lengths = [len(frame.prefix) + len(prompt) + len(r) + len(frame.suffix) for r in responses]
            if all(s == seqs[0] for s in seqs[1:]):  # every response the same after truncation
                what, name = ("chosen and rejected are", "rejected") if "chosen" in row else ("all responses are",
                                                                                              "responses")
                out.append(self._empty(name, f"{what} identical after truncation to {self.max_length} tokens"))
                continue
            if "chosen" in row:
                feats: dict[str, Any] = {"chosen_ids": seqs[0], "rejected_ids": seqs[1]}
                if row.get("margin") is not None:
                    feats["margin"] = float(row["margin"])
            else:
                feats = {"response_ids": seqs, "ranks": list(row["ranks"])}
            out.append(Encoded(feats, lengths, max(lengths) > self.max_length, tokens=sum(map(len, seqs))))
        return out

    def encode_scored(self, prompts: Sequence[Any], responses: Sequence[Any]) -> list[list[int]]:
        """Ids of (prompt, response) pairs for scoring, exactly as training framed them. A string
        response to a conversation is taken as the assistant's reply."""
        rows = [{"prompt": p, "chosen": as_turn(p, r), "rejected": as_turn(p, r)} for p, r in zip(prompts, responses,
                                                                                              strict=True)]
        out = []
        for part in self.split(rows):
            if isinstance(part, Encoded):
                raise ValueError(f"cannot render this conversation with the reward model's template: {part.problem}")
            prompt, resps, frame = part
            kept_prompt, kept = fit(prompt, resps[:1], frame.budget(self.max_length))
            out.append(frame.prefix + kept_prompt + kept[0] + frame.suffix)
        return out
