"""Every handler, one module per resource; importing this package registers them all in ``ROUTES``.

- ``builds``    ``/builds...``: register, move forward, fail, reset, read, history
- ``artifacts`` ``/builds/{ref}/artifacts`` and ``/artifacts/latest``: what builds made, the deployers' lookup
- ``events``    ``/events``, ``/events/{seq}`` and ``/dashboard/summary``
- ``service``   ``/``, ``/health``, ``/ready``, ``/metrics``
- ``access``    ``/token``, ``/admin/keys``, ``/admin/users``, ``/audit``
- ``stream``    ``/events/stream`` (Server-Sent Events) and the live updates that wake it
- ``webhooks``  ``/admin/webhooks...``
- ``release``   ``/channels...``, ``/builds/{ref}/parents``, ``/ancestry``, ``/revoke``, ``/restore``

A new endpoint goes into the module of its resource (or a new one imported here), declared with
``@route(...)`` from ``web.routing``; the order here is the order of ``/openapi.json``.
"""

from buildstate.web.routes import access, artifacts, builds, events, release, service, stream, webhooks

__all__ = ["access", "artifacts", "builds", "events", "release", "service", "stream", "webhooks"]
