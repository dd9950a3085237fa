"""Live updates: webhook subscriptions, their signed deliveries, and the event stream's wake-ups.

- ``models``      request/response models of ``/admin/webhooks``
- ``secrets``     webhook secrets encrypted at rest (they must be read back to sign)
- ``store``       subscriptions, the delivery outbox and its log, on either database
- ``payloads``    what a delivery carries: our JSON, a CDEvents CloudEvent, or a Concourse check trigger
- ``dispatcher``  claims due deliveries (safe with many workers and instances), sends, retries, gives up
- ``targets``     where webhooks may send: the URL rules at creation, the address rules at every connect
- ``watch``       wakes event streams and the dispatcher when events are committed (LISTEN/NOTIFY or polling)
- ``routes``      ``/admin/webhooks...`` and ``/events/stream`` (which ends when its credential does)
- ``cli``         ``buildstate webhooks ...`` and ``buildstate events tail``

The outbox row for each matching subscription is written by the event append itself, in the same
transaction as the event (``store/postgres.py``, ``store/sqlite.py``): a committed event cannot miss its
webhooks, and a rolled-back one sends none.
"""
