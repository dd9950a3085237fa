"""Who is calling, and what they may do: API keys, users and JWTs, scopes, rate limits, sign-in throttling.

Layout (each module has one reason to change):

- ``scopes``      scope names, what each role grants, and which scopes imply others
- ``principal``   ``Principal``: the resolved caller (actor string, scopes, platform restriction)
- ``keys``        API key format ``bs_<8 hex>_<43 url-safe chars>``: generation, digest, constant-time match
- ``passwords``   argon2id hashing, off the event loop, with a dummy verify for unknown users
- ``tokens``      JWT issue and decode: HS256 only, required claims, issuer and audience checked
- ``secret``      where the JWT secret comes from (environment, or generated once for development)
- ``ratelimit``   token buckets, per process or shared through Redis
- ``accounts``    creating keys and users, shared by the CLI and the admin routes
- ``service``     ``Authenticator``: credentials in, ``Principal`` out; sign-in with throttling
- ``cli``         ``buildstate keys ...`` and ``buildstate users ...``

Nothing here knows HTTP: the middleware that enforces each route's scope is
``buildstate.web.middlewares.auth``, the routes for ``/token``, ``/admin/*`` and ``/audit`` are
``buildstate.web.routes.access``, and the rows live behind ``store.access``.
"""
