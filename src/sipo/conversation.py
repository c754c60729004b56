"""Multi-turn prompts that keep their turns through every stage.

Records carry a prompt as one string (it is hashed into ``prompt_id``, used as a key and written to JSONL), so a
conversation is stored as a string too: a one-turn conversation (a single user message) is just that message's
text, exactly as before, and a longer one is :data:`MARKER` followed by the JSON list of its messages. Nothing is
flattened: :func:`sipo.models.loading.format_prompt` renders the turns with the model's chat template (or the plain
template, one ``USER:`` / ``ASSISTANT:`` per turn), and :func:`readable` gives the text that the review and rewrite
templates quote.

Example::

    prompt = encode([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                     {"role": "user", "content": "Name a colour."}])
    decode(prompt)[-1]["content"]   # 'Name a colour.'
    encode([{"role": "user", "content": "Hi"}])   # 'Hi'
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

MARKER = "<sipo:messages>"
"""Start of an encoded multi-turn prompt (no real prompt starts with it)."""
ROLES = ("system", "user", "assistant")

Message = dict[str, str]


def check_messages(messages: Any, what: str = "messages") -> list[Message]:
    """``messages`` as a list of ``{role, content}`` dicts; ValueError (naming ``what``) if it is not one."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"{what} must be a non-empty list of {{role, content}} messages")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise ValueError(f"{what}[{i}] must be an object with 'role' and 'content'")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise ValueError(f"{what}[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"{what}[{i}].content must be a string")
        checked.append({"role": role, "content": content})
    return checked


def encode(messages: Sequence[Mapping[str, str]]) -> str:
    """The prompt string of a conversation that ends with a user turn (see the module docstring)."""
    checked = check_messages(list(messages))
    if checked[-1]["role"] != "user":
        raise ValueError("a prompt must end with a user message")
    if len(checked) == 1:
        return checked[0]["content"]
    return MARKER + json.dumps(checked, ensure_ascii=False, separators=(",", ":"))


def decode(prompt: str) -> list[Message] | None:
    """The messages of an encoded multi-turn prompt; None for a plain (one-turn) prompt."""
    if not prompt.startswith(MARKER):
        return None
    return check_messages(json.loads(prompt[len(MARKER):]), "encoded prompt")


def to_messages(prompt: str) -> list[Message]:
    """Every prompt as a list of messages (a plain prompt is one user message)."""
    return decode(prompt) or [{"role": "user", "content": prompt}]


def readable(prompt: str) -> str:
    """The prompt as text a reader (or a reviewer model) understands: plain prompts unchanged, conversations as
    ``User: ...`` / ``Assistant: ...`` paragraphs."""
    messages = decode(prompt)
    if messages is None:
        return prompt
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    return "\n\n".join(f"{names[m['role']]}: {m['content']}" for m in messages)


def render_plain(prompt: str) -> str:
    """The paper's plain template extended to several turns: ``BEGINNING OF CONVERSATION: USER: ... ASSISTANT: ...
    USER: ... ASSISTANT:`` (a system message goes first as ``SYSTEM: ...``). One user turn gives exactly
    ``BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:``."""
    parts = ["BEGINNING OF CONVERSATION:"]
    for message in to_messages(prompt):
        parts.append(f"{message['role'].upper()}: {message['content']}")
    parts.append("ASSISTANT:")
    return " ".join(parts)
