"""Whole numbers from text (a version, a param, a Retry-After): ASCII digits only.

``str.isdigit()`` accepts digits ``int()`` refuses (``"²"``) and ``int()`` takes what no such number is
(``"١٢"``, ``"1_000"``). The service has the same rule (``buildstate.numbers``); the resource's image does not
carry the service, hence this one small function twice.
"""

import re

_DIGITS = re.compile(r"[0-9]+")


def ascii_int(text: str, *, max_digits: int = 18) -> int | None:
    if len(text) > max_digits or not _DIGITS.fullmatch(text):
        return None
    return int(text)
