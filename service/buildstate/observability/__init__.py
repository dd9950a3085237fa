"""What an operator sees of a running service: Prometheus metrics and structured logs.

``metrics``     the Prometheus collectors (multiprocess-safe under gunicorn) and the ``/metrics`` exposition
``logging``     one JSON object a line in production, plain text in a terminal; secrets scrubbed

Both are framework-free: what feeds them from requests (the ``observe`` middleware, ``/metrics``, the pool
sampler) is ``buildstate.web.observe``.
"""
