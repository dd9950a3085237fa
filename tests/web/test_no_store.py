"""Every answer that carries a secret is sent ``Cache-Control: no-store``, found from the route table so that
a new route cannot be missed: a response field that holds a credential is marked ``Credential`` (and a
field named like one must be), and each route whose responses hold one is called here, on both stores."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from pydantic import BaseModel

from buildstate.auth import accounts
from buildstate.models import Credential
from buildstate.store import Store
from buildstate.store.base import WriteContext
from buildstate.web.app import create_app  # noqa: F401 - every module's routes are in ROUTES once imported
from buildstate.web.routes import ROUTES

Client = TestClient[Any, Any]
# A field whose name says it holds a secret must be marked as one (key, secret, access_token, password...).
SECRET_NAME = re.compile(r"(^|_)(key|secret|token|password|credential)s?$")
PASSWORD = "a long enough password for tests"


def fields(model: type[BaseModel], where: str = "") -> Iterator[tuple[str, bool]]:
    """(dotted name, marked as a credential) for every value field of ``model`` and of the models in it."""
    for name, info in model.model_fields.items():
        inner = [
            arg
            for arg in (info.annotation, *getattr(info.annotation, "__args__", ()))
            if isinstance(arg, type) and issubclass(arg, BaseModel)
        ]
        for nested in inner:
            yield from fields(nested, f"{where}{name}.")
        if not inner:
            yield f"{where}{name}", any(isinstance(meta, Credential) for meta in info.metadata)


def test_every_response_field_named_like_a_secret_is_marked_as_one() -> None:
    unmarked = [
        f"{route.method} {route.path} -> {model.__name__}.{name}"
        for route in ROUTES
        for model in route.responses.values()
        if model is not None
        for name, marked in fields(model)
        if SECRET_NAME.search(name.rsplit(".", 1)[-1]) and not marked
    ]
    assert unmarked == []


async def _sign_in(client: Client, store: Store) -> ClientResponse:
    ctx = WriteContext(actor="test")
    await accounts.create_user(store, username="erin", role="viewer", password=PASSWORD, ctx=ctx)
    return await client.post("/token", json={"username": "erin", "password": PASSWORD})


CALLS: dict[tuple[str, str], Callable[[Client, Store], Awaitable[ClientResponse]]] = {
    ("POST", "/token"): _sign_in,
    ("POST", "/admin/keys"): lambda client, _: client.post(
        "/admin/keys", json={"name": "ci", "scopes": ["read"]}
    ),
    ("POST", "/admin/webhooks"): lambda client, _: client.post(
        "/admin/webhooks", json={"name": "ci", "url": "https://hooks.example.com/x"}
    ),
}


async def test_every_answer_that_carries_a_secret_is_not_stored(client: Client, store: Store) -> None:
    carrying = {(route.method, route.path) for route in ROUTES if route.carries_secret}
    assert carrying == set(CALLS)  # a new route that hands out a secret needs a call here
    for (method, path), call in CALLS.items():
        answer = await call(client, store)
        assert answer.status in {200, 201}, (method, path, await answer.text())
        assert answer.headers["Cache-Control"] == "no-store", (method, path)
        assert answer.headers["Pragma"] == "no-cache", (method, path)
    listing = await client.get("/admin/webhooks")  # and answers without a secret stay cacheable as before
    assert "no-store" not in listing.headers.get("Cache-Control", "")
