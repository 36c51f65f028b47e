"""The one tokenisation path: canonical rows -> the exact token ids a trainer consumes.

Validation, `rlhf check` and training all call these encoders, so what is checked is what is
trained: a row the encoder cannot turn into a trainable example carries a `truncated_empty`
problem (an error, or dropped and counted under `data.on_invalid=drop`), and the trainer is given
the encoded features as they are (TRL sees already-tokenised datasets and does no filtering of its
own). One encoder per trainer family, each with the truncation rule of that trainer:

- `SFTEncoder`: ``{"input_ids", "labels"}`` as TRL's SFTTrainer builds them (EOS after text and
  completions, chat template for conversations), cut at the end to max_length (TRL's keep_start);
  labels are -100 outside the trained tokens (`loss_on`: assistant turns, the completion, or all).
- `PreferenceEncoder`: ``{"prompt_ids", "chosen_ids", "rejected_ids"}`` as TRL's DPOTrainer builds
  them; prompt + response cut at the end (keep_start), so a prompt of max_length tokens or more
  leaves nothing to train on.
- `RewardEncoder`: ``{"chosen_ids", "rejected_ids"}`` or ``{"response_ids", "ranks"}`` for a
  sequence-classification reward model: the prompt loses its START first (one window shared by all
  responses of a row), a response longer than the whole budget keeps its start (`rlhf.reward`); in `rlhf.data.reward_encode`).
- `PromptEncoder`: ``{"prompt_ids"}`` for sampling (generate, eval, PPO, GRPO/RLOO).

Texts are tokenised in batches through the fast tokenizer (`tokens.batch_ids`); conversations through the chat template
(`rlhf.data.chat`), whose ids equal ``tokenizer.apply_chat_template(...)["input_ids"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rlhf.errors import UserError

from . import chat
from .rows import KINDS, Problem
from .tokens import batch_ids

Row = dict[str, Any]
LOSS_ON = ("assistant", "completion", "all")
# tokenizer_config.json key of a saved reward model: the frame of a conversation, which its exported
# post-processor (the plain-text reward frame, `rlhf.run.portable`) no longer tells apart.
CHAT_FRAME_KEY = "rlhf_chat_frame"


@dataclass
class Encoded:
    """One row as the trainer will see it, or the reason it cannot be trained on."""

    features: dict[str, Any] = field(default_factory=dict)
    lengths: list[int] = field(default_factory=list)  # each sequence's length before truncation
    truncated: bool = False  # some sequence lost tokens at max_length (still trained on the rest)
    trained_tokens: int = 0  # tokens that carry loss (sft), else 0
    tokens: int = 0  # tokens handed to the trainer
    problem: Problem | None = None


def one_bos(seqs: list[list[int]], bos: int | None) -> list[list[int]]:
    """Each sequence with a leading run of BOS ids cut to one (exactly one BOS, never two)."""
    if bos is None:
        return seqs
    out = []
    for ids in seqs:
        n = 0
        while n < len(ids) and ids[n] == bos:
            n += 1
        out.append(ids[n - 1 :] if n > 1 else ids)
    return out


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def is_conversational(row: Row) -> bool:
    """TRL's definition: the row's text fields are message lists."""
    for key in ("messages", "prompt", "completion", "chosen", "rejected"):
        if key in row:
            return chat.is_messages(row[key])
    return bool(row.get("responses")) and chat.is_messages(row["responses"][0])


def require_template(rows: Sequence[Row], tokenizer: Any, source: str) -> None:
    """Conversations need a chat template: refuse before any model loads, saying how to fix it."""
    if chat.has_template(tokenizer) or not any(is_conversational(r) for r in rows):
        return
    name = getattr(tokenizer, "name_or_path", "the model")
    raise UserError(
        f"data: {source} holds conversations (message lists) but the tokenizer of {name} has no chat "
        "template. Choose one with model.chat_template=chatml (or llama3, zephyr, or the path of a "
        ".jinja file), or give plain-text prompt/completion rows instead."
    )


class Encoder:
    """Turns canonical rows into trainer features; `rule` says how over-long rows are cut."""

    kinds: tuple[str, ...] = ()
    rule: str = ""

    def __init__(self, tokenizer: Any, max_length: int):
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise UserError(f"model.max_length: expected an integer >= 2, got {max_length!r}")
        self.tok, self.max_length = tokenizer, max_length
        self.eos = tokenizer.eos_token_id

    def encode(self, rows: Sequence[Row]) -> list[Encoded]:
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------------
    def _text_ids(self, texts: list[str], specials: bool = True) -> list[list[int]]:
        """Ids of plain texts; a BOS the text already carries (e.g. rendered by a chat template, "<s>...")
        is recognised: with the tokenizer's own BOS it would be doubled, so one is kept."""
        return one_bos(batch_ids(self.tok, texts, specials), self.tok.bos_token_id)

    def _with_eos(self, ids: list[int]) -> list[int]:
        return ids + [self.eos] if self.eos is not None and (not ids or ids[-1] != self.eos) else ids

    def _empty(self, field_name: str, detail: str) -> Encoded:
        return Encoded(problem=Problem("truncated_empty", field_name, detail))

    @staticmethod
    def _guard(fn, row: Row, *args):
        """fn(row, ...) for a conversation, or the Encoded problem saying why its template failed it."""
        field_name = "messages" if "messages" in row else "prompt"
        try:
            return fn(row, *args)
        except chat.TurnNotFound as e:
            return Encoded(problem=Problem("bad_value", f"{field_name}", f"{e}: the chat template renders earlier "
                                           "turns differently once later ones follow; give prompt/completion rows"))
        except Exception as e:  # jinja2's TemplateError and friends: the template refuses this conversation
            if type(e).__module__.split(".")[0] != "jinja2":
                raise
            return Encoded(problem=Problem("bad_value", field_name, f"the chat template refused it: {e}"))


class SFTEncoder(Encoder):
    kinds = ("sft",)

    def __init__(self, tokenizer: Any, max_length: int, loss_on: str = "assistant"):
        super().__init__(tokenizer, max_length)
        if loss_on not in LOSS_ON:
            raise UserError(f"stage.loss_on: {loss_on!r} is not one of {', '.join(LOSS_ON)}")
        self.loss_on = loss_on
        self.rule = (f"prompt + completion cut at the end to max_length {max_length} (TRL's keep_start); "
                     f"loss on {'every token' if loss_on == 'all' else loss_on + ' tokens'}")

    def encode(self, rows: Sequence[Row]) -> list[Encoded]:
        plain = [i for i, r in enumerate(rows) if not is_conversational(r)]
        texts = [rows[i].get("text", rows[i].get("prompt")) for i in plain]
        full = [rows[i]["prompt"] + rows[i]["completion"] for i in plain if "completion" in rows[i]]
        first, second = self._text_ids(texts), iter(self._text_ids(full))
        out: list[Encoded | None] = [None] * len(rows)
        for i, ids in zip(plain, first, strict=True):
            if "text" in rows[i]:
                seq = self._with_eos(ids)
                out[i] = self._finish(seq, [1] * len(seq))
            else:
                seq = self._with_eos(next(second))
                p = common_prefix(ids, seq)
                mask = [1] * len(seq) if self.loss_on == "all" else [0] * p + [1] * (len(seq) - p)
                out[i] = self._finish(seq, mask)
        for i, row in enumerate(rows):
            if out[i] is None:
                out[i] = self._guard(self._conversation, row)
        return out  # type: ignore[return-value]

    def _conversation(self, row: Row) -> Encoded:
        if "messages" in row:
            r = chat.render_turns(self.tok, row["messages"])
            mask = {"assistant": r.assistant, "completion": r.last_assistant}.get(self.loss_on, [1] * len(r.input_ids))
            return self._finish(r.input_ids, mask, "messages")
        p = chat.ids(self.tok, row["prompt"], add_generation_prompt=True)
        r = chat.render_turns(self.tok, row["prompt"] + row["completion"])
        n = common_prefix(p, r.input_ids)
        if self.loss_on == "all":
            mask = [1] * len(r.input_ids)
        elif self.loss_on == "completion":
            mask = [0] * n + [1] * (len(r.input_ids) - n)
        else:
            mask = [0] * n + r.assistant[n:]
        return self._finish(r.input_ids, mask, "completion")

    def _finish(self, ids: list[int], mask: list[int], field_name: str = "completion") -> Encoded:
        m = self.max_length
        labels = [t if keep else -100 for t, keep in zip(ids[:m], mask[:m], strict=True)]
        trained = sum(1 for x in labels if x != -100)
        if not trained:
            if not any(mask):
                return self._empty("row", "no token to train on (no assistant turn / empty completion)")
            return self._empty(field_name, f"nothing left to train on: the prompt alone is {mask.index(1)} tokens "
                                           f">= max_length {m}")
        return Encoded({"input_ids": ids[:m], "labels": labels}, [len(ids)], len(ids) > m, trained, min(len(ids), m))


class PreferenceEncoder(Encoder):
    """DPO pairs, tokenised as TRL's DPOTrainer does (EOS after plain-text responses)."""

    kinds = ("pair",)

    def __init__(self, tokenizer: Any, max_length: int):
        super().__init__(tokenizer, max_length)
        self.rule = (f"prompt + response cut at the end to max_length {max_length} (TRL's DPO keep_start): "
                     "a prompt that fills max_length leaves nothing to train on")

    def encode(self, rows: Sequence[Row]) -> list[Encoded]:
        plain = [i for i, r in enumerate(rows) if not is_conversational(r)]
        p_ids = self._text_ids([rows[i]["prompt"] for i in plain])
        c_ids = self._text_ids([rows[i]["prompt"] + rows[i]["chosen"] for i in plain])
        r_ids = self._text_ids([rows[i]["prompt"] + rows[i]["rejected"] for i in plain])
        seqs: dict[int, tuple[list[int], list[int], list[int]]] = {
            i: (p, self._with_eos(c), self._with_eos(r)) for i, p, c, r in zip(plain, p_ids, c_ids, r_ids, strict=True)
        }
        return [self._pair(*seqs[i]) if i in seqs else self._guard(self._conversation, row)
                for i, row in enumerate(rows)]

    def _conversation(self, row: Row) -> Encoded:
        prompt = row["prompt"]
        return self._pair(chat.ids(self.tok, prompt, add_generation_prompt=True),
                          chat.ids(self.tok, prompt + row["chosen"]), chat.ids(self.tok, prompt + row["rejected"]))

    def _pair(self, prompt: list[int], chosen: list[int], rejected: list[int]) -> Encoded:
        m = self.max_length
        n = min(common_prefix(prompt, chosen), common_prefix(prompt, rejected))
        if n >= m:
            return self._empty("prompt", f"the prompt alone is {n} tokens >= max_length {m}: DPO keeps the start "
                                         "of prompt + response, so nothing of chosen or rejected would be trained")
        if chosen[:m] == rejected[:m]:
            return self._empty("rejected", f"chosen and rejected are identical after truncation to {m} tokens")
        feats = {"prompt_ids": chosen[:n], "chosen_ids": chosen[n:m], "rejected_ids": rejected[n:m]}
        return Encoded(feats, [len(chosen), len(rejected)], max(len(chosen), len(rejected)) > m,
                       tokens=min(len(chosen), m) + min(len(rejected), m))


class PromptEncoder(Encoder):
    """Prompts to sample from: plain text with the tokenizer's specials, conversations through the
    chat template with the generation prompt (what TRL's GRPO/RLOO and `generate` feed the model)."""

    kinds = KINDS  # every kind offers prompts: its `prompt`, or a conversation up to its last assistant turn

    def __init__(self, tokenizer: Any, max_length: int):
        super().__init__(tokenizer, max_length)
        self.rule = f"prompts of max_length {max_length} tokens or more are refused (no room to generate)"

    def encode(self, rows: Sequence[Row]) -> list[Encoded]:
        prompts = [prompt_of(r) for r in rows]
        plain = [i for i, p in enumerate(prompts) if isinstance(p, str)]
        ids = dict(zip(plain, self._text_ids([prompts[i] for i in plain]), strict=True))
        out = []
        for i, p in enumerate(prompts):
            if p is None:
                out.append(Encoded(problem=Problem("missing_field", "prompt", "a text row has no prompt to sample "
                                                   "from (give prompt/completion or messages rows)")))
                continue
            if i not in ids:
                got = self._guard(lambda row: chat.ids(self.tok, row["prompt"], add_generation_prompt=True), {"prompt": p})
                if isinstance(got, Encoded):
                    out.append(got)
                    continue
            seq = ids[i] if i in ids else got
            if len(seq) >= self.max_length:
                out.append(self._empty("prompt", f"the prompt alone is {len(seq)} tokens >= max_length "
                                                 f"{self.max_length}: no room to generate"))
                continue
            out.append(Encoded({"prompt_ids": seq}, [len(seq)], False, tokens=len(seq)))
        return out


def prompt_of(row: Row) -> str | list | None:
    """The prompt a row offers for sampling: its prompt, or a conversation up to its last assistant turn."""
    if "prompt" in row:
        return row["prompt"]
    messages = row.get("messages")
    if messages:
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=len(messages))
        return messages[:last] or None
    return None


def responses_of(row: Row) -> list[Any]:
    return [row["chosen"], row["rejected"]] if "chosen" in row else list(row["responses"])


def as_turn(prompt: Any, response: Any) -> Any:
    if isinstance(prompt, list) and isinstance(response, str):
        return [{"role": "assistant", "content": response}]
    return response
