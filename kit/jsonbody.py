"""Parsing a small JSON object from an untrusted body, bounded: its nesting is measured
before the parser sees it (Python's parser recurses, and a body of a few kilobytes of
brackets would otherwise end in RecursionError, a 500)."""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
# Every byte except brackets, deleted in C so only the structure is walked in Python.
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class BodyError(ValueError):
    """The body is not one JSON object within the limits; the message says why, `code`
    names it (invalid_json: not JSON at all; invalid_body: JSON of the wrong shape)."""

    def __init__(self, message: str, code: str = "invalid_body") -> None:
        super().__init__(message)
        self.code = code


def nesting_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in `raw` (strings do not count)."""
    brackets = _STRINGS.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def load_object(raw: bytes, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """The JSON object in `raw` (empty: {}), refused if nested deeper than `max_depth`."""
    if nesting_depth(raw) > max_depth:
        raise BodyError(f"The body is nested deeper than {max_depth} levels.")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError) as exc:
        raise BodyError("The body is not JSON.", "invalid_json") from exc
    if not isinstance(body, dict):
        raise BodyError("The body must be a JSON object.")
    return body
