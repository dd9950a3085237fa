"""The buildstate Concourse resource type: ``check``, ``in`` and ``out`` against the buildstate API.

Layout, one reason to change per module:

- ``protocol``: the Concourse side of a script run (stdout guarded at fd level, stdin, exit codes).
- ``config``: ``source`` and ``params`` validation; the allowed-keys lists live here.
- ``client``: the HTTP side (urllib, TLS with extra CAs, proxies, one outer retry loop).
- ``events``: how an event becomes a version, metadata and the files ``in`` writes.
- ``provenance``: what a ``put`` records about the Concourse build, and its idempotency key.
- ``check``, ``get``, ``put``: the three scripts.

Error tree (all one-line messages, printed without a traceback)::

    ResourceError
    ├── ConfigError      bad source, params, version or input files
    └── ApiError         the service said no, or could not be reached in the retry budget

Only the standard library is imported here: a ``check`` runs every minute per resource, so start-up
time is the budget, and the image carries no service dependencies.
"""

__all__: list[str] = []
