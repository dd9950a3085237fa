"""buildstate: where every VM image build stands.

Layout (each module has one reason to change), top layer first; a layer imports only those below it
(``lint-imports``, docs/architecture.md):

- ``cli``, ``gunicorn_conf``   the ``buildstate`` console command (serve, migrate, ...), the gunicorn master
- ``web/``        the aiohttp application, and the only aiohttp server code: app, routing, requests,
                  middlewares, one route module per resource, the observe middleware
- ``auth/``, ``webhooks/``, ``observability/``   who may do what; live updates; metrics and logs
- ``console``     what the store-side commands share
- ``store/``      the ``Store`` interface, an executor per database, repositories written once, SQL
- ``models``      pydantic models: request validation, responses, OpenAPI
- ``domain``, ``config``   the state-machine rules and event types (pure, no I/O); settings (``BUILDSTATE_*``)
- ``errors``      the problem+json error hierarchy
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("buildstate")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
