"""Whole numbers from text that someone else wrote: a path segment, a header, a receiver's answer.

``str.isdigit()`` says yes to digits ``int()`` refuses (``"²"``), and ``int()`` itself takes what no HTTP
number is (``"١٢"``, ``" 12 "``, ``"+1"``, ``"1_000"``): both are the wrong test for such text. A number
here is 1 to ``max_digits`` ASCII digits and nothing else.
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]+")


def ascii_int(text: str, *, max_digits: int = 18) -> int | None:
    """The value of ``text`` if it is 1 to ``max_digits`` ASCII digits (18 fit a 64-bit column), else None."""
    if len(text) > max_digits or not _DIGITS.fullmatch(text):
        return None
    return int(text)
