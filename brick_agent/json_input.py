"""JSON from untrusted input (CLI files/stdin, gate request bodies): bounded nesting.

Python's json decoder recurses per nesting level: a few thousand ``[`` raise
RecursionError (not ValueError), and anything deep that does decode makes every
later recursive walk (validation, deepcopy, masking) a risk.  Connection
properties nest a few levels; :data:`MAX_DEPTH` leaves ample room.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

MAX_DEPTH = 64


class JsonInputError(ValueError):
    """Not acceptable JSON: malformed or nested deeper than :data:`MAX_DEPTH`."""


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether containers in ``value`` nest deeper than ``limit`` (iterative, no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def loads(text: str | bytes, limit: int = MAX_DEPTH) -> Any:
    """``json.loads`` raising :class:`JsonInputError` for bad or too deeply nested input."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise JsonInputError(f"JSON nested deeper than {limit} levels") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise JsonInputError(f"not valid JSON: {exc}") from None
    if depth_exceeds(value, limit):
        raise JsonInputError(f"JSON nested deeper than {limit} levels")
    return value
