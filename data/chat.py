"""Conversations as token ids: the tokenizer's chat template, rendered once, with turn spans.

A conversation is a list of ``{"role", "content"}`` messages (TRL's conversational format). Its ids
are exactly ``tokenizer.apply_chat_template(messages)["input_ids"]``: the template is rendered to
text and the text tokenised without adding special tokens (the template writes its own BOS, so it
is never doubled). Which tokens belong to which assistant turn is found by rendering the prefix
before each assistant turn (with the generation prompt) and the prefix through it: the turn's span
is the text in between (its content and end-of-turn marker, not the role header), mapped to tokens
through the fast tokenizer's offsets. No ``{% generation %}`` markers are needed in the template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Message = dict[str, Any]

ROLES = ("system", "user", "assistant", "tool")


def is_messages(value: Any) -> bool:
    """True for a non-empty list whose items are dicts with a `role` (TRL's conversational format)."""
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def has_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render(tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
    """The template's text for `messages` (what `apply_chat_template(tokenize=False)` returns)."""
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def ids(tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool = False) -> list[int]:
    """Token ids of a rendered conversation: `apply_chat_template(...)["input_ids"]`, without a dict."""
    text = render(tokenizer, messages, add_generation_prompt)
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


@dataclass
class Rendered:
    """A conversation's ids and, per token, whether it is in an assistant turn / the last one."""

    input_ids: list[int]
    assistant: list[int]  # 1 on tokens of any assistant turn (content + end-of-turn marker)
    last_assistant: list[int]  # 1 on tokens of the final assistant turn only


class TurnNotFound(ValueError):
    """The template renders an assistant turn in a way its prefixes do not reveal."""

    def __init__(self, index: int):
        self.index = index
        super().__init__(f"cannot find assistant turn {index} in the rendered conversation")


def render_turns(tokenizer: Any, messages: Sequence[Message]) -> Rendered:
    """Ids of the whole conversation with masks of the assistant turns (see the module docstring).

    Raises TurnNotFound when an assistant turn cannot be located in the rendered text (a template
    that renders earlier turns differently once later ones exist, and does not contain the turn's
    content verbatim).
    """
    messages = list(messages)
    text = render(tokenizer, messages)
    spans = [_turn_span(tokenizer, messages, text, i) for i, m in enumerate(messages) if m["role"] == "assistant"]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = enc["offset_mapping"]
    assistant = [0] * len(offsets)
    last = [0] * len(offsets)
    for k, (start, end) in enumerate(spans):
        for t, (a, b) in enumerate(offsets):
            inside = a < end and b > start if b > a else start <= a < end
            if inside:
                assistant[t] = 1
                if k == len(spans) - 1:
                    last[t] = 1
    return Rendered(list(enc["input_ids"]), assistant, last)


def _turn_span(tokenizer: Any, messages: list[Message], text: str, i: int) -> tuple[int, int]:
    """Character span of assistant turn i in `text`: after its generation prompt, through its end marker."""
    before = render(tokenizer, messages[:i], add_generation_prompt=True) if i else None
    through = render(tokenizer, messages[: i + 1])
    if (before is None or text.startswith(before)) and text.startswith(through):
        start = len(before) if before is not None else _content_start(through, messages[i])
        if start <= len(through):
            return start, len(through)
    content = str(messages[i]["content"])
    at = text.find(content, len(before) if before is not None and text.startswith(before) else 0)
    if not content or at < 0:
        raise TurnNotFound(i)
    return at, at + len(content)


def _content_start(through: str, message: Message) -> int:
    """A conversation that opens with an assistant turn: its span starts where its content does."""
    at = through.rfind(str(message["content"]))
    return at if at >= 0 else 0


def plain_text(prompt: str | Sequence[Message]) -> str:
    """A prompt as plain text for judges: a string as it is, a conversation as "role: content" lines."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
