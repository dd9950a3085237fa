"""What wraps every request, outermost first (``web.app.create_app`` lists them in this order):

``forwarded.forwarded_client`` (the client's address behind a trusted proxy) -> ``problems.request_id`` ->
``web.observe.observe`` (metrics and the access log) -> ``cors.cors_middleware`` -> ``problems.problems``
(every error as problem+json) -> ``auth.auth_middleware`` (credential, rate limit, scope, platform) ->
the handler.
"""
