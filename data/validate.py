"""Schema checks of canonical rows, duplicate detection, and the one error that lists them all.

Every row is checked before any model is loaded, so a bad row costs a second, not a failed run.
A row's problems carry a reason code (see `rows.REASONS`) and a message `file:line: field: what
was expected`. A row is counted once, under its first problem, in `dropped` counts.

Text fields take TRL's two formats: standard (a string) or conversational (a list of
``{"role", "content"}`` messages). Within one row a string response to a conversation is read as the
assistant's reply (and a string prompt before conversational responses as the user's turn), so every
row comes out in one format. A pair without a `prompt` (TRL's implicit-prompt format: `chosen` and
`rejected` are whole conversations or texts) is split at the last shared turn / common prefix with
TRL's own `extract_prompt`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from rlhf.errors import UserError

from .chat import ROLES, is_messages
from .rows import PAIR_KEYS, PROMPT_KEYS, RANKED_KEYS, SFT_SHAPES, UNPAIRED_KEYS, Item, Origin, Problem

# A margin is a score gap (Llama 2's are 0-3, scaled judge gaps rarely reach 100): beyond this it is a unit
# or parsing mistake, and beyond float32's 3.4e38 the reward loss -log sigmoid(r_c - r_r - margin) is inf.
MAX_MARGIN = 1e4
# Ranks are positions in a list of responses (0 = best; gaps allowed, e.g. after deleted replies).
MAX_RANK = 1000
# A response that starts with the whole prompt repeats it (trained as prompt + prompt + response), when the
# prompt has at least this many characters (a short prompt such as "Q:" can start a real answer).
MIN_REPEATED_PROMPT = 16
MAX_LISTED = 20  # problems spelled out in one error; the rest are counted
N_EXAMPLES = 5  # example messages per invalid reason in the `rlhf check` report
TEXT_FIELDS = ("prompt", "completion", "text", "chosen", "rejected")


def normalize(row: dict[str, Any], kind: str, conversational: bool = False) -> tuple[dict[str, Any], list[Problem]]:
    """The row reduced to its canonical keys (in one format), and every schema problem it has.

    `conversational`: wrap plain-text prompts as a user turn and responses as an assistant turn."""
    if kind == "sft":
        shape = next((s for s in SFT_SHAPES if any(k in row for k in s)), None)
        if shape is None:
            have = ", ".join(map(str, row)) or "none"
            return {}, [Problem("missing_field", "row", f"expected prompt+completion, messages or text; has keys: {have}")]
        keys: Sequence[str] = shape
    else:
        keys = {"pair": PAIR_KEYS, "prompt": PROMPT_KEYS, "unpaired": UNPAIRED_KEYS}.get(kind, RANKED_KEYS)
        if kind == "pair" and "prompt" not in row and "chosen" in row and "rejected" in row:
            row = _extract_prompt(row)
    clean = {k: row[k] for k in keys if k in row}
    problems: list[Problem] = []
    for k in (k for k in keys if k != "margin"):
        if k not in row:
            problems.append(Problem("missing_field", k, f"missing{_typo_hint(k, row, keys)}"))
    if "messages" in clean:
        problems += _check_messages("messages", clean["messages"], need_assistant=True)
    for k in TEXT_FIELDS:
        if k in clean and k != "text":
            problems += _check_text_or_turns(k, clean[k], need_assistant=k != "prompt")
    if "text" in clean:
        problems += _check_text("text", clean["text"])
    if "margin" in clean:
        m = clean["margin"]
        if isinstance(m, bool) or not isinstance(m, int | float):
            problems.append(Problem("wrong_type", "margin", f"expected a number, got {_type(m)}"))
        elif not math.isfinite(m):
            problems.append(Problem("bad_value", "margin", f"expected a finite number, got {m}"))
        elif abs(m) > MAX_MARGIN:
            problems.append(Problem("bad_value", "margin", f"{m:g} is beyond ±{MAX_MARGIN:g}: the reward loss "
                                    "-log sigmoid(r_chosen - r_rejected - margin) would be "
                                    f"{'infinite' if abs(m) > 3.4e38 else 'about ' + format(abs(m), 'g')} for this "
                                    "pair (a margin is a score gap, e.g. 0-10; check its units or sign)"))
    if "label" in clean and not isinstance(clean["label"], bool):
        problems.append(Problem("wrong_type", "label", f"expected true or false (desirable or not), got "
                                                       f"{_type(clean['label'])} {clean['label']!r}"))
    if kind == "ranked" and "responses" in clean and "ranks" in clean:
        problems += _check_ranked(clean["responses"], clean["ranks"])
    if problems:
        return clean, problems
    clean = _one_format(clean, conversational)
    if kind == "pair" and clean["chosen"] == clean["rejected"]:
        problems.append(Problem("chosen_equals_rejected", "rejected", "identical to chosen"))
    problems += _repeated_prompt(clean)
    return clean, problems


def _last_user(x: Any) -> str:
    if isinstance(x, str):
        return x
    return next((str(m.get("content") or "") for m in reversed(x) if m.get("role") == "user"), "")


def _reply(x: Any) -> str:
    if isinstance(x, str):
        return x
    return next((str(m.get("content") or "") for m in x if m.get("role") == "assistant"), "")


def _repeated_prompt(row: dict[str, Any]) -> list[Problem]:
    """A response that begins with the whole prompt (see MIN_REPEATED_PROMPT): the trainer reads
    prompt + response, so the prompt would be trained twice. Plain text, or a conversation's last
    user turn against the reply's first assistant turn."""
    if "prompt" not in row:
        return []
    prompt = _last_user(row["prompt"]).strip()
    if len(prompt) < MIN_REPEATED_PROMPT:
        return []
    fields = [(k, row[k]) for k in ("completion", "chosen", "rejected") if k in row]
    fields += [(f"responses[{i}]", r) for i, r in enumerate(row.get("responses", []))]
    for name, value in fields:
        if _reply(value).lstrip().startswith(prompt):
            return [Problem("response_repeats_prompt", name, f"starts with the whole prompt ({_clip(prompt)}): "
                            "the trainer joins prompt + response, so the prompt would be trained twice; remove it "
                            "from the responses, or give chosen/rejected without a prompt field (TRL's implicit "
                            "prompt)")]
    return []


def _clip(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def _extract_prompt(row: dict[str, Any]) -> dict[str, Any]:
    """TRL's implicit-prompt split (the longest shared prefix of turns, or of text)."""
    chosen, rejected = row["chosen"], row["rejected"]
    same_format = isinstance(chosen, str) == isinstance(rejected, str)
    if not same_format or not (isinstance(chosen, str) or (is_messages(chosen) and is_messages(rejected))):
        return row
    from trl.data_utils import extract_prompt

    return {**row, **extract_prompt({"chosen": chosen, "rejected": rejected})}


def _one_format(row: dict[str, Any], conversational: bool) -> dict[str, Any]:
    """Every text field of the row in one format (see the module docstring)."""
    fields = [k for k in ("prompt", "completion", "chosen", "rejected") if k in row]
    values = [row[k] for k in fields] + list(row.get("responses", []))
    if "messages" in row or "text" in row or not values:
        return row
    if not conversational and not any(isinstance(v, list) for v in values):
        return row
    out = dict(row)
    for k in fields:
        out[k] = _turns(row[k], "user" if k == "prompt" else "assistant")
    if "responses" in row:
        out["responses"] = [_turns(r, "assistant") for r in row["responses"]]
    return out


def _turns(value: Any, role: str) -> list[dict[str, Any]]:
    return value if isinstance(value, list) else [{"role": role, "content": value}]


def _typo_hint(key: str, row: dict[str, Any], keys: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, [str(k) for k in row if k not in keys], n=1, cutoff=0.6)
    if close:
        return f" (the row has `{close[0]}`: misspelled?)"
    return f" (the row has keys: {', '.join(map(str, row)) or 'none'})"


def _type(x: Any) -> str:
    return "null" if x is None else type(x).__name__


def _check_text(field: str, value: Any) -> list[Problem]:
    if not isinstance(value, str):
        return [Problem("wrong_type", field, f"expected a string, got {_type(value)}")]
    if not value.strip():
        return [Problem("empty_text", field, "empty (expected non-blank text)")]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate such as "\ud800": json accepts the escape
        return [Problem("unencodable_text", field, f"a lone surrogate U+{ord(value[e.start]):04X} at character "
                        f"{e.start + 1} is not text (a half of an escaped UTF-16 pair?); fix or remove it")]
    return []


def _check_text_or_turns(field: str, value: Any, need_assistant: bool) -> list[Problem]:
    if isinstance(value, list):
        return _check_messages(field, value, need_assistant)
    if not isinstance(value, str):
        return [Problem("wrong_type", field, f"expected a string or a list of {{role, content}} messages, "
                                             f"got {_type(value)}")]
    return _check_text(field, value)


def _check_messages(field: str, messages: Any, need_assistant: bool) -> list[Problem]:
    if not isinstance(messages, list):
        return [Problem("wrong_type", field, f"expected a non-empty list of {{role, content}}, got {_type(messages)}")]
    if not messages:
        return [Problem("empty_text", field, "an empty list of messages")]
    out: list[Problem] = []
    for i, m in enumerate(messages):
        where = f"{field}[{i}]"
        if not isinstance(m, dict):
            out.append(Problem("wrong_type", where, f"expected an object with role and content, got {_type(m)}"))
            continue
        for k in ("role", "content"):
            if k not in m:
                out.append(Problem("missing_field", f"{where}.{k}", "missing"))
        if "role" in m and m["role"] not in ROLES:
            out.append(Problem("bad_value", f"{where}.role", f"expected one of {', '.join(ROLES)}, got {m['role']!r}"))
        if "content" in m and not (m.get("tool_calls") and m["content"] in (None, "")):
            out += _check_text(f"{where}.content", m["content"])
    if not out and need_assistant and not any(m["role"] == "assistant" for m in messages):
        out.append(Problem("bad_value", field, "no assistant message (nothing to train on)"))
    return out


def _check_ranked(responses: Any, ranks: Any) -> list[Problem]:
    out: list[Problem] = []
    if not isinstance(responses, list):
        return [Problem("wrong_type", "responses", f"expected a list of responses, got {_type(responses)}")]
    if not isinstance(ranks, list):
        return [Problem("wrong_type", "ranks", f"expected a list of integers, got {_type(ranks)}")]
    for i, r in enumerate(responses):
        out += _check_text_or_turns(f"responses[{i}]", r, need_assistant=True)
    for i, r in enumerate(ranks):
        if isinstance(r, bool) or not isinstance(r, int):
            out.append(Problem("wrong_type", f"ranks[{i}]", f"expected an integer (0 = best), got {_type(r)}"))
        elif r < 0:
            out.append(Problem("bad_value", f"ranks[{i}]", f"expected a rank >= 0 (0 = best), got {r}"))
        elif r > MAX_RANK:
            out.append(Problem("bad_value", f"ranks[{i}]", f"expected a small rank, 0 (best) to {MAX_RANK}, got {r:.3g}"
                               if r > 10**6 else f"expected a small rank, 0 (best) to {MAX_RANK}, got {r}"))
    if out:
        return out
    if len(ranks) != len(responses):
        return [Problem("ranks_mismatch", "ranks", f"{len(ranks)} ranks for {len(responses)} responses")]
    if len(responses) < 2 or len(set(ranks)) < 2:
        what = f"{len(responses)} response(s)" if len(responses) < 2 else f"all {len(ranks)} ranks equal"
        return [Problem("too_few_ranks", "ranks", f"expected >= 2 responses with >= 2 distinct ranks, got {what}")]
    return out


def row_key(row: dict[str, Any]) -> str:
    """A canonical text of the row: equal keys mean exact duplicates (also the split's hash input)."""
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


class Deduper:
    """Flags every valid row that repeats an earlier valid row exactly, across chunks and splits.

    Keeps 16 bytes of BLAKE2b per distinct row (a collision among 10^9 rows has odds ~1e-21) and
    where it was first seen, packed in one int: ~120 bytes a row in all, not the row."""

    def __init__(self) -> None:
        self.first: dict[bytes, int] = {}
        self.places: dict[tuple[str, str], int] = {}  # (file, unit) -> index, packed into the low 16 bits
        self.names: list[tuple[str, str]] = []

    def check(self, item: Item, key: str) -> None:
        """Record `item` (whose canonical text is `key`) or flag it as a duplicate of the first one."""
        digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
        seen = self.first.get(digest)
        if seen is None:
            self.first[digest] = self._pack(item.origin)
        else:
            file, unit = self.names[seen & 0xFFFF]
            first = Origin(file, seen >> 16, unit)
            item.problems.append(Problem("duplicate", "row", f"exact duplicate of {first}"))

    def _pack(self, origin: Origin) -> int:
        where = (origin.file, origin.unit)
        index = self.places.get(where)
        if index is None:
            index = self.places[where] = len(self.names)
            self.names.append(where)
            if index > 0xFFFF:
                raise UserError("data.source: more than 65,536 files in one source")
        return origin.line << 16 | index


class ProblemLog:
    """Every invalid row, counted, with the first few messages kept (bounded memory at any size).

    A row counts once, under its first problem (`dropped`); `error` lists the first MAX_LISTED
    problems in file order, how many more there are and the count per reason; `report` keeps
    N_EXAMPLES rows per reason for `rlhf check`."""

    def __init__(self) -> None:
        self.rows = 0  # invalid rows
        self.dropped: Counter[str] = Counter()  # rows by the reason of their first problem
        self.problems: Counter[str] = Counter()  # every problem by reason
        self.n_messages = 0
        self.listed: list[str] = []
        self.examples: dict[str, list[str]] = {}

    def add(self, item: Item) -> None:
        problems = item.problems
        self.rows += 1
        self.dropped[problems[0].reason] += 1
        for p in problems:
            self.problems[p.reason] += 1
        if len(self.listed) < MAX_LISTED:
            self.listed += [p.message(item.origin) for p in problems[: MAX_LISTED - len(self.listed)]]
        self.n_messages += len(problems)
        found = self.examples.setdefault(problems[0].reason, [])
        if len(found) < N_EXAMPLES:
            found.append("; ".join(p.message(item.origin) for p in problems))

    def error(self, n_rows: int, source: str) -> UserError:
        """One error listing the first MAX_LISTED problems, how many more there are, and a count per reason."""
        listed = list(self.listed)
        if self.n_messages > MAX_LISTED:
            listed.append(f"... and {self.n_messages - MAX_LISTED} more")
        listed.append("problems by reason: " + ", ".join(f"{r} {n}" for r, n in self.problems.most_common()))
        title = (
            f"{self.rows} of {n_rows} rows from {source} are invalid "
            "(fix them, or set data.on_invalid=drop to drop them)"
        )
        return UserError(listed, title=title)

    def report(self) -> dict[str, Any]:
        """Invalid rows per reason (a row counts under its first problem) with a few example messages."""
        return {"total": self.rows, "by_reason": dict(self.dropped.most_common()), "examples": self.examples}
