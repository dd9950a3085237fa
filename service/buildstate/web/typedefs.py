"""Every key stored on the application or on a request, in one place (aiohttp wants typed keys)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from buildstate.auth.principal import Principal
from buildstate.auth.service import Authenticator
from buildstate.config import Settings
from buildstate.observability.metrics import Metrics
from buildstate.store import Store
from buildstate.webhooks.dispatcher import Dispatcher
from buildstate.webhooks.watch import FeedWatcher

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
# Checks credentials and rate limits; built in create_app from the settings and the store.
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
METRICS = web.AppKey("metrics", Metrics)
# Live updates: what wakes event streams and the webhook dispatcher, and the flag that ends streams.
WATCHER = web.AppKey("watcher", FeedWatcher)
# Sends webhook deliveries (in the background, when BUILDSTATE_WEBHOOK_DISPATCHER is on) and test messages.
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
STREAMS_CLOSING = web.AppKey("streams_closing", asyncio.Event)

REQUEST_ID = web.RequestKey("request_id", str)
# Who is making the request, as recorded on events and audit rows ("anonymous" until auth says otherwise).
ACTOR = web.RequestKey("actor", str)
# The checked caller (absent on public routes): scopes and platform restriction.
PRINCIPAL = web.RequestKey("principal", Principal)
# A body read_body parsed already: (model class, parsed model, raw bytes), so a request is parsed once.
PARSED_BODY = web.RequestKey("parsed_body", tuple)
