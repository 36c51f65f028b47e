"""Tokenise preference rows for a sequence-classification reward model, truncating prompts on the left.

TRL's RewardTrainer tokenises ``prompt + response`` and silently drops every pair longer than
``max_length`` (about 1 pair in 5 of HH-RLHF at 256 tokens). Here nothing is dropped: the prompt
loses tokens from its start first, since what the reward model must judge is the response and the
turns just before it.

Each sequence is assembled as

    [tokenizer's own leading specials] [BOS] prompt response [EOS] [tokenizer's own trailing specials]

- The tokenizer's own specials are what it adds to a single sequence (BERT: ``[CLS] … [SEP]``;
  Llama 3: ``<|begin_of_text|>``; stories260k and Qwen: nothing).
- BOS is prepended (``add_bos``) only when the tokenizer has one and its own specials do not already
  start with it; a causal LM was pretrained with it at position 0 (stories260k needs it explicitly).
- EOS is appended (``add_eos``) only when the tokenizer has one and its own specials do not already
  end with it, as TRL does; a sequence-classification head on a causal LM reads the last token, so
  an EOS gives it a fixed place to summarise the whole response (so give such a model a pad token
  other than EOS: it finds the last real token by the pad id). BERT has no EOS: its ``[SEP]`` and
  ``[CLS]`` play that part.
- Prompt and response are tokenised separately (``add_special_tokens=False``), so the prompt tokens
  are exactly shared by all responses of a row; the ids can differ from tokenising the joined string
  only at the boundary token.

Truncation, with ``budget = max_length - number of special tokens``:

- The prompt window is shared by all responses of a row (the chosen and the rejected answer are
  judged against the same context): the prompt keeps its last ``budget - longest response`` tokens.
- A response longer than the whole budget keeps its first ``budget`` tokens (the prompt is then
  dropped entirely); the special tokens, EOS included, are always kept at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from rlhf.errors import UserError

_MAX_LISTED = 10  # problems listed one by one before "... and N more"


@dataclass(frozen=True)
class TokenizeReport:
    """What tokenisation did to the rows: nothing is ever dropped."""

    n_rows: int
    n_truncated: int  # rows where the prompt or a response lost tokens
    n_response_truncated: int  # rows where a response itself had to be cut (its prompt is then gone)

    def __str__(self) -> str:
        return (
            f"{self.n_rows} rows, {self.n_truncated} truncated (prompt cut on the left), "
            f"{self.n_response_truncated} with a response cut, 0 dropped"
        )


@dataclass(frozen=True)
class SequenceFrame:
    """Special tokens around the content of every sequence, and the content budget they leave."""

    prefix: list[int]
    suffix: list[int]

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase, add_bos: bool = True, add_eos: bool = True):
        # Probe which specials the tokenizer adds around a single sequence.
        bare = tokenizer("a", add_special_tokens=False, verbose=False)["input_ids"]
        full = tokenizer("a", add_special_tokens=True)["input_ids"]
        at = next((i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare), None)
        prefix, suffix = (list(full[:at]), list(full[at + len(bare) :])) if at is not None else ([], [])
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        if add_bos and bos is not None and bos not in prefix:
            prefix = prefix + [bos]
        if add_eos and eos is not None and eos not in suffix:
            suffix = [eos] + suffix
        return cls(prefix, suffix)

    def budget(self, max_length: int) -> int:
        return max_length - len(self.prefix) - len(self.suffix)


def fit(prompt: list[int], responses: Sequence[list[int]], budget: int) -> tuple[list[int], list[list[int]]]:
    """Cut a prompt (from its start) and its responses (from their end) to fit ``budget`` tokens each."""
    responses = [list(r[:budget]) for r in responses]
    keep = budget - max(len(r) for r in responses)
    return (list(prompt[max(0, len(prompt) - keep) :]) if keep > 0 else []), responses


def _encode(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    responses: list[list[str]],
    max_length: int,
    add_bos: bool,
    add_eos: bool,
) -> tuple[list[list[list[int]]], TokenizeReport]:
    """Ids of every (prompt, response_k) sequence, one list of K sequences per row."""
    frame = SequenceFrame.of(tokenizer, add_bos=add_bos, add_eos=add_eos)
    budget = frame.budget(max_length)
    if budget < 1:
        raise UserError(
            f"max_length={max_length} leaves no room for text after the tokenizer's "
            f"{len(frame.prefix) + len(frame.suffix)} special tokens"
        )
    prompt_ids = tokenizer(prompts, add_special_tokens=False, verbose=False)["input_ids"] if prompts else []
    flat = [r for rs in responses for r in rs]
    flat_ids = tokenizer(flat, add_special_tokens=False, verbose=False)["input_ids"] if flat else []
    out, n_truncated, n_response_truncated, at = [], 0, 0, 0
    for p_ids, rs in zip(prompt_ids, responses, strict=True):
        r_ids = flat_ids[at : at + len(rs)]
        at += len(rs)
        kept_prompt, kept = fit(p_ids, r_ids, budget)
        cut_response = any(len(a) != len(b) for a, b in zip(kept, r_ids, strict=True))
        n_response_truncated += cut_response
        n_truncated += cut_response or len(kept_prompt) != len(p_ids)
        out.append([frame.prefix + kept_prompt + r + frame.suffix for r in kept])
    return out, TokenizeReport(len(out), n_truncated, n_response_truncated)


def _check_rows(rows: Sequence[Mapping[str, Any]], fields: Mapping[str, type], what: str) -> list[str]:
    problems = []
    for i, row in enumerate(rows):
        for name, kind in fields.items():
            if not isinstance(row.get(name), kind):
                got = type(row.get(name)).__name__ if name in row else "missing"
                problems.append(f"{what} row {i}: field `{name}` must be {kind.__name__}, got {got}")
    return problems


def _raise(problems: list[str]) -> None:
    if problems:
        extra = len(problems) - _MAX_LISTED
        shown = problems[:_MAX_LISTED] + ([f"... and {extra} more"] if extra > 0 else [])
        raise UserError(shown, title=f"{len(problems)} problems in the reward rows")


def tokenize_pairs(
    rows: Iterable[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    add_eos: bool = True,
    add_bos: bool = True,
) -> tuple[Dataset, TokenizeReport]:
    """Tokenise pair rows ``{"prompt", "chosen", "rejected"[, "margin"]}`` (see the module docstring).

    Returns a Dataset with columns ``chosen_ids`` and ``rejected_ids`` (plus ``margin`` when the rows
    carry one): the columns TRL's RewardTrainer takes as already processed, so it neither appends an
    EOS nor tokenises nor filters. Every row is kept; the report counts the truncated ones.
    """
    rows = list(rows)
    problems = _check_rows(rows, {"prompt": str, "chosen": str, "rejected": str}, "pair")
    with_margin = [i for i, row in enumerate(rows) if row.get("margin") is not None]
    if with_margin and len(with_margin) != len(rows):
        problems.append(
            f"{len(with_margin)} of {len(rows)} pair rows have a `margin`: give it to all or none"
        )
    _raise(problems)
    ids, report = _encode(
        tokenizer,
        [row["prompt"] for row in rows],
        [[row["chosen"], row["rejected"]] for row in rows],
        max_length,
        add_bos,
        add_eos,
    )
    columns: dict[str, list] = {"chosen_ids": [c for c, _ in ids], "rejected_ids": [r for _, r in ids]}
    if with_margin:
        columns["margin"] = [float(row["margin"]) for row in rows]
    return Dataset.from_dict(columns), report


def tokenize_ranked(
    rows: Iterable[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    add_eos: bool = True,
    add_bos: bool = True,
) -> tuple[Dataset, TokenizeReport]:
    """Tokenise ranked rows ``{"prompt", "responses": [K str], "ranks": [K int]}`` (rank 0 = best).

    Returns a Dataset with columns ``response_ids`` (K id lists per row, sharing one prompt window)
    and ``ranks``, the input of KWiseRewardTrainer and evaluate_ranked.
    """
    rows = list(rows)
    problems = _check_rows(rows, {"prompt": str, "responses": list, "ranks": list}, "ranked")
    for i, row in enumerate(rows):
        responses, ranks = row.get("responses"), row.get("ranks")
        if isinstance(responses, list) and isinstance(ranks, list):
            if len(responses) < 2 or len(responses) != len(ranks):
                problems.append(
                    f"ranked row {i}: needs K >= 2 responses and as many ranks, "
                    f"got {len(responses)} responses and {len(ranks)} ranks"
                )
            elif not all(isinstance(r, str) for r in responses) or not all(isinstance(r, int) for r in ranks):
                problems.append(f"ranked row {i}: responses must be strings and ranks integers")
    _raise(problems)
    ids, report = _encode(
        tokenizer,
        [row["prompt"] for row in rows],
        [row["responses"] for row in rows],
        max_length,
        add_bos,
        add_eos,
    )
    return Dataset.from_dict({"response_ids": ids, "ranks": [list(row["ranks"]) for row in rows]}), report


def tokenize_texts(
    texts: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    add_eos: bool = True,
    add_bos: bool = True,
) -> list[list[int]]:
    """Ids of whole texts (e.g. full dialogues) in the same frame, cut from the left to ``max_length``."""
    frame = SequenceFrame.of(tokenizer, add_bos=add_bos, add_eos=add_eos)
    budget = frame.budget(max_length)
    ids = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"] if texts else []
    return [frame.prefix + t[max(0, len(t) - budget) :] + frame.suffix for t in ids]
