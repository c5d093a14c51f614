"""Text that is safe to echo: control characters (terminal escapes, newlines) and the Unicode
marks that reorder or hide text are shown as escapes, never passed to the terminal raw."""

from __future__ import annotations

import re
from typing import Any, Iterator

_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def printable(text: str) -> str:
    """`text` with every control or reordering character written as `\\xNN` / `\\uNNNN`."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                            text)


def unprintable(text: str) -> bool:
    return _UNPRINTABLE.search(text) is not None


def strings(value: Any) -> Iterator[str]:
    """The strings in a value: itself, or the items, keys and values of lists, tuples and dicts."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(key)
            yield from strings(item)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, colour codes removed and the rest made printable,
    at most 300 characters (the exception's type when it has no text)."""
    text = _COLOUR.sub("", str(exc)).strip()
    return printable(text.splitlines()[0] if text else type(exc).__name__)[:300]
