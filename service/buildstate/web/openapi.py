"""OpenAPI 3.1, generated from ``ROUTES`` and the pydantic models they name (never written by hand)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from buildstate import __version__
from buildstate.models import ProblemDetails
from buildstate.web.routing import Route

_REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"{(\w+)}")
_ERROR_TEXT = {
    400: "Malformed request",
    401: "Missing or invalid credentials",
    403: "Credentials lack the needed scope",
    404: "Not found",
    409: "The change breaks a build rule",
    410: "Withdrawn: the build is revoked",
    413: "Body too large",
    415: "Body is not JSON",
    422: "Validation failed (any route: a NUL character in the query)",
    429: "Rate limited",
    503: "Database unavailable",
}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=_REF)
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": {k: v for k, v in prop.items() if k not in {"title", "description"}},
            **({"description": prop["description"]} if "description" in prop else {}),
        }
        for name, prop in schema.get("properties", {}).items()
    ]


# pyproject.toml's licence, as an SPDX identifier.
LICENSE = {"name": "Apache-2.0", "identifier": "Apache-2.0"}
# What any route can answer whatever it is: a NUL character in the query is refused before any handler.
_EVERY_ROUTE_ERRORS = (422,)
# Answers that are not JSON: what they hold.
_MEDIA_SCHEMAS = {
    "text/event-stream": {
        "type": "string",
        "description": "Server-Sent Events: per event `id: <seq>`, `event: <type>`, `data: <Event as JSON>`, "
        "then a blank line; comment lines (`:`) keep the connection alive.",
    },
    "text/plain": {
        "type": "string",
        "description": "Just the value asked for and a newline (`Accept: text/plain`), for `$(curl ...)` and "
        "Terraform's `http` data source.",
    },
}


def _success_content(media: str) -> dict[str, Any]:
    schema = _MEDIA_SCHEMAS.get(media, {"type": "string"})
    return {media: {"schema": schema}}


def build_openapi(
    routes: list[Route], security: dict[str, Any] | None = None, server_url: str = "/"
) -> dict[str, Any]:
    """The document; ``server_url`` is where the API is (``/``: wherever the document was fetched from)."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ProblemDetails, "serialization")]
    for r in routes:
        if r.body is not None:
            models.append((r.body, "validation"))
        models.extend((m, "serialization") for m in r.responses.values() if m is not None)
    unique = list(dict.fromkeys(models))
    refs, schema = models_json_schema(unique, ref_template=_REF)

    def content(model: type[BaseModel], mode: JsonSchemaMode, media: str = "application/json") -> Any:
        return {media: {"schema": refs[(model, mode)]}}

    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        operation: dict[str, Any] = {
            "operationId": r.handler.__name__,
            "summary": r.summary,
            "tags": [r.tag],
            "responses": {},
        }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PATH_PARAM.findall(r.path)
        ]
        if r.query is not None:
            parameters.extend(_query_parameters(r.query))
        parameters.extend(
            {
                "name": param.name,
                "in": where,
                "required": False,
                "schema": {"type": "string", "pattern": param.pattern},
                "description": param.description,
            }
            for where, params in (("query", r.query_patterns), ("header", r.headers))
            for param in params
        )
        if parameters:
            operation["parameters"] = parameters
        if r.body is not None:
            operation["requestBody"] = {"required": True, "content": content(r.body, "validation")}
            operation["parameters"] = [
                *operation.get("parameters", []),
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    "description": "Retry-safe writes: the same key and body replay the first response.",
                },
            ]
        for status, model in r.responses.items():
            answer: dict[str, Any] = {"description": "OK" if status < 300 else "Not ready"}
            if model is not None:
                answer["content"] = content(model, "serialization")
                for media in r.alternates if status < 300 else ():
                    answer["content"].update(_success_content(media))
            elif r.media is not None:
                answer["content"] = _success_content(r.media)
            operation["responses"][str(status)] = answer
        errors = [*r.errors, *_EVERY_ROUTE_ERRORS]
        if r.scope != "public":
            # Checking the credential reads the database, so any of these routes can meet it down.
            errors.extend(code for code in (401, 403, 429, 503) if code not in errors)
        for status in sorted(set(errors)):
            operation["responses"][str(status)] = {
                "description": _ERROR_TEXT.get(status, "Error"),
                "content": content(ProblemDetails, "serialization", "application/problem+json"),
            }
        if r.scope == "public":
            operation["security"] = []
        paths.setdefault(r.path, {})[r.method.lower()] = operation

    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "buildstate",
            "version": __version__,
            "description": "Where every VM image build stands. Errors are RFC 9457 problem+json.",
            "license": LICENSE,
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {"schemas": schema.get("$defs", {})},
    }
    if security:
        document["components"]["securitySchemes"] = security
        document["security"] = [{name: []} for name in security]
    return document
