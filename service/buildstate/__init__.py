"""buildstate: where every VM image build stands.

Layout (each module has one reason to change):

- ``config``      settings from the environment (``BUILDSTATE_*``)
- ``domain``      the state-machine rules, pure functions, no I/O
- ``models``      pydantic models: request validation, responses, OpenAPI
- ``errors``      the problem+json error hierarchy
- ``store/``      one ``Store`` interface, SQLite and PostgreSQL implementations, SQL migrations
- ``web/``        the aiohttp application: routes, middlewares, OpenAPI document
- ``cli``         the ``buildstate`` console command (serve, migrate, ...)
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("buildstate")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
