"""OpenAI-compatible request bodies checked and turned into generation settings; errors in OpenAI's JSON shape.

Everything here is plain data: no HTTP, no model. A field the server cannot honour is refused with a 400 naming it,
never silently ignored; unknown fields are ignored (clients send many).
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any

from franken_rt.errors import FrankenError
from franken_rt.sampling import SamplingParams

# OpenAI's defaults for what a request leaves out (a model file's recommended settings come first).
OPENAI_DEFAULTS: dict[str, float | int] = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0}
COMPLETIONS_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat generates until the end or the context
MAX_STOPS = 4


class ApiError(Exception):
    """An error answered as {"error": {"message", "type", "param", "code"}} with an HTTP status."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


@dataclass
class Generation:
    """What a request asks the engine for."""

    prompt: list[int]
    params: SamplingParams
    max_tokens: int
    stops: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    ignore_eos: bool = False
    draft_max: int = 0  # speculative decoding with prompt lookup: at most this many drafted tokens a step; 0: off


# Fields the server refuses unless they ask for the default behaviour: (field, test that the value is harmless).
_UNSUPPORTED: dict[str, Any] = {
    "n": lambda v: v is None or v == 1,
    "best_of": lambda v: v is None or v == 1,
    "logprobs": lambda v: v in (None, False),
    "top_logprobs": lambda v: v is None,
    "tools": lambda v: v in (None, []),
    "tool_choice": lambda v: v in (None, "none"),
    "functions": lambda v: v in (None, []),
    "function_call": lambda v: v in (None, "none"),
    "response_format": lambda v: v is None or v == {"type": "text"},
    "frequency_penalty": lambda v: v in (None, 0, 0.0),
    "presence_penalty": lambda v: v in (None, 0, 0.0),
    "logit_bias": lambda v: v in (None, {}),
    "echo": lambda v: v in (None, False),
    "suffix": lambda v: v in (None, ""),
    "audio": lambda v: v is None,
    "modalities": lambda v: v in (None, ["text"]),
    "prediction": lambda v: v is None,
}


def _number(body: dict[str, Any], name: str, lo: float, hi: float, lo_open: bool = False) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise bad(f"'{name}' must be a number", name)
    if value < lo or value > hi or (lo_open and value == lo):
        raise bad(f"'{name}' must be in {'(' if lo_open else '['}{lo}, {hi}], got {value}", name)
    return float(value)


def _integer(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad(f"'{name}' must be an integer", name)
    if not lo <= value <= hi:
        raise bad(f"'{name}' must be between {lo} and {hi}, got {value}", name)
    return value


def boolean(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad(f"'{name}' must be true or false", name)
    return value


def check_unsupported(body: dict[str, Any]) -> None:
    for name, harmless in _UNSUPPORTED.items():
        if name in body and not harmless(body[name]):
            raise bad(f"'{name}' is not supported by this server", name)


def sampling(body: dict[str, Any], defaults: dict[str, float | int]) -> SamplingParams:
    """The request's sampling settings; what it leaves out comes from `defaults` (the model's recommendation over
    OpenAI's defaults)."""
    given = {
        "temperature": _number(body, "temperature", 0.0, 2.0),
        "top_p": _number(body, "top_p", 0.0, 1.0, lo_open=True),
        "top_k": _integer(body, "top_k", 0, 1 << 30),
        "min_p": _number(body, "min_p", 0.0, 0.999999),
        "repetition_penalty": _number(body, "repetition_penalty", 0.0, 10.0, lo_open=True),
    }
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise bad("'seed' must be an integer", "seed")
    settings = {**OPENAI_DEFAULTS, **defaults, **{k: v for k, v in given.items() if v is not None}}
    settings["seed"] = seed % (1 << 64) if seed is not None else int.from_bytes(os.urandom(8), "little")
    try:
        return SamplingParams(**settings)  # type: ignore[arg-type]
    except FrankenError as e:
        raise bad(str(e)) from None


DRAFT_MAX = 16


def draft(body: dict[str, Any]) -> int:
    """`draft: "lookup"` (and `draft_max`, default 8): speculative decoding from the text so far, the same output
    faster when the answer repeats it; the draft length per step at most draft_max, 0 when not asked for."""
    value = body.get("draft")
    if value is None:
        if body.get("draft_max") is not None:
            raise bad("'draft_max' needs 'draft'", "draft_max")
        return 0
    if value != "lookup":
        raise bad("'draft' must be \"lookup\" (prompt lookup; self and draft models are franken-run's)", "draft")
    k = _integer(body, "draft_max", 1, DRAFT_MAX)
    return 8 if k is None else k


def stops(body: dict[str, Any]) -> list[str]:
    value = body.get("stop")
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise bad("'stop' must be a string or a list of strings", "stop")
    if len(items) > MAX_STOPS:
        raise bad(f"'stop' holds at most {MAX_STOPS} strings", "stop")
    return [s for s in items if s]


def max_tokens(body: dict[str, Any], default: int, room: int) -> int:
    """max_completion_tokens (or the older max_tokens), at most what the context leaves after the prompt."""
    asked = _integer(body, "max_completion_tokens", 0, 1 << 30)
    if asked is None:
        asked = _integer(body, "max_tokens", 0, 1 << 30)
    return min(asked if asked is not None else default, room)


def stream_settings(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = boolean(body, "stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not isinstance(options, dict):
        raise bad("'stream_options' must be an object", "stream_options")
    if not stream:
        raise bad("'stream_options' is only allowed with 'stream': true", "stream_options")
    return stream, boolean(options, "include_usage")


def messages(body: dict[str, Any]) -> list[dict[str, str]]:
    """The conversation as the chat template takes it: role and text content. Content given as parts must be
    text parts only."""
    value = body.get("messages")
    if not isinstance(value, list) or not value:
        raise bad("'messages' must be a non-empty list", "messages")
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad(f"'{where}' must be an object", where)
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "developer", "user", "assistant"):
            raise bad(f"'{where}.role' must be system, user or assistant", f"{where}.role")
        if isinstance(content, list):
            parts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise bad(f"'{where}.content': only text parts are supported", f"{where}.content")
                parts.append(part["text"])
            content = "".join(parts)
        if not isinstance(content, str):
            raise bad(f"'{where}.content' must be a string", f"{where}.content")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def completion_prompt(body: dict[str, Any], vocab_size: int) -> str | list[int]:
    """The prompt of /v1/completions: a string, a list holding one string, or token ids."""
    value = body.get("prompt")
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]
    if isinstance(value, str):
        if not value:
            raise bad("'prompt' is empty", "prompt")
        return value
    if isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        if not all(0 <= t < vocab_size for t in value):
            raise bad("'prompt' holds a token id outside the vocabulary", "prompt")
        return list(value)
    if isinstance(value, list) and len(value) > 1:
        raise bad("'prompt': one prompt per request is supported", "prompt")
    raise bad("'prompt' must be a non-empty string or a list of token ids", "prompt")
