"""The SQL of each area, in one ``<area>.sql`` file beside this module, read by name.

A file is a list of statements, each after a ``-- name: <name>`` line (comments under it say why). Where the
databases really differ, ``-- name: <name>.sqlite`` and ``-- name: <name>.postgresql`` give each its own
text, and ``Queries.statement`` picks the executor's. Parameters are named (``:name``).

Why not aiosql: its statement files are the same idea, but it runs them itself, through one driver
adapter per database, as a plain function call per statement (sync for sqlite3, async for asyncpg). Our
transactions are written once as generators that the SQLite writer thread drives in one hop and asyncpg
drives on one connection (``store.executor``); aiosql would have given us only the file parsing, which is
these forty lines, for one more dependency and its adapters' ideas of connections and transactions.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from buildstate.store.executor import Statement
from buildstate.store.sql import Dialect

_NAME = re.compile(r"^--\s*name:\s*([\w.]+)\s*$", re.MULTILINE)


class Queries:
    """The statements of ``<area>.sql``."""

    def __init__(self, area: str) -> None:
        text = resources.files(__package__).joinpath(f"{area}.sql").read_text(encoding="utf-8")
        parts = _NAME.split(text)[1:]
        self._sql: dict[str, str] = {}
        for name, body in zip(parts[::2], parts[1::2], strict=True):
            lines = [
                line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("--")
            ]
            if name in self._sql:
                raise ValueError(f"{area}.sql names {name!r} twice")
            self._sql[name] = "\n".join(lines)
        self.area = area

    def sql(self, name: str, dialect: Dialect | None = None, /) -> str:
        if dialect is not None and f"{name}.{dialect.name}" in self._sql:
            return self._sql[f"{name}.{dialect.name}"]
        if name not in self._sql:
            raise KeyError(f"{self.area}.sql has no statement {name!r} (for {dialect and dialect.name})")
        return self._sql[name]

    def statement(self, name: str, dialect: Dialect | None = None, /, **params: Any) -> Statement:
        return Statement(self.sql(name, dialect), params)
