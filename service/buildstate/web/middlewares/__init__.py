"""What wraps every request, outermost first (``web.app.create_app`` lists them in this order):

``forwarded.forwarded_client`` (the client's address behind a trusted proxy; installed only when
``BUILDSTATE_TRUSTED_PROXIES`` lists some) -> ``web.observe.observe`` (the request id,
``problems.request_id``, then metrics and the access log; then CORS, ``cors.Cors``) ->
``problems.problems`` (every error as problem+json) -> ``auth.auth_middleware`` (credential, rate limit,
scope, platform) -> the handler. Every layer costs every request a call and a coroutine, so there are no
more of them than the order needs.
"""
