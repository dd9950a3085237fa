"""What an operator sees of a running service: Prometheus metrics and structured logs.

``metrics``     the Prometheus collectors (multiprocess-safe under gunicorn) and the ``/metrics`` exposition
``logging``     one JSON object a line in production, plain text in a terminal; secrets scrubbed
``middleware``  the one middleware that times every request and feeds both
"""
