"""Our events as CDEvents 0.5.1 (https://cdevents.dev), in a CloudEvents 1.0 envelope.

Which CDEvent each event becomes (``MAPPING``, one row per buildstate event type; a new event type is one
more ``CDEventType`` and one more row):

============  ==================================================================
created       ``dev.cdevents.build.queued.0.3.0``: registered, at state 0
reset         ``dev.cdevents.build.queued.0.3.0``: a new attempt, back at state 0
state < 100   ``dev.cdevents.build.started.0.3.0``: the first state change of an attempt starts it, and
              each later one below 100 is sent as ``started`` again (CDEvents 0.5.1 has no "progressed"
              predicate; ``customData.from_state_code`` is 0 on the first one)
state 100     ``dev.cdevents.build.finished.0.3.0`` with ``subject.content.artifactId``
failure       ``dev.cdevents.build.finished.0.3.0`` without an artifact
artifact      ``dev.cdevents.artifact.published.0.3.0``: one per ``artifact`` event, whose subject is the
              build's image (its purl, the ``artifactId`` of its ``build.finished``) and whose
              ``customData.detail.artifacts`` are the copies this event recorded (AMI per region, ...)
channel       ``dev.cdevents.environment.modified.0.3.0``: the channel (``channels/<name>/<platform>/
              <os_version>/<image_type>``, ``content.name`` its name) has a new head, or none
revoked       ``dev.cdevents.artifact.deleted.0.2.0``: the image (its purl) must not be used any more
restored      ``dev.cdevents.artifact.published.0.3.0``: the image may be used again (published again)
============  ==================================================================

Why one CDEvent per ``artifact`` event and not one per artifact: a CDEvents artifact is what a build
produced, named by the purl its ``build.finished`` announces as ``artifactId``, so a receiver joins the two
on that id; the AMIs of one image in several regions are where that artifact is published (as the spec's
``?repository_url=`` qualifier says where an OCI image is), not several artifacts. And a delivery is one
signed message per feed event (one outbox row per subscription and event, one ``webhook-id`` and one
``context.id`` across its retries): one CDEvent per artifact would need several messages per event or a
CloudEvents batch, which common CDEvents receivers do not take. A build whose artifacts are recorded in
two calls publishes twice, each time with the artifacts that call added.

The fields, as the 0.5.1 schemas allow them (each has ``additionalProperties: false``):

- ``context.specversion`` is ``0.5.1`` (CDEvents 0.5 renamed 0.3's ``context.version`` to ``specversion`` and
  dropped ``subject.type``: neither may appear). ``context.id`` is a UUID derived from the build's UUID and
  the event's ``seq`` (``context_id``): the same for every subscription and redelivery, so that a receiver
  fed by two of them can de-duplicate, and different across installs (a bare ``seq`` repeats across
  installs and after a database is rebuilt). ``context.source`` is ``BUILDSTATE_PUBLIC_URL``
  (``urn:buildstate`` when unset); ``context.timestamp`` is when it was recorded.
- ``subject.id`` is ``builds/<uuid>/attempts/<n>``: one build run per attempt, since a reset starts the build
  over and CDEvents' build is a "run to completion" subject; an ``artifact.published``'s is the image's purl
  (CDEvents names an artifact by its purl). ``subject.source`` is left out: it is the
  context's source (the spec asks for it only when the two differ).
- ``subject.content`` is empty, except ``artifactId`` on ``build.finished`` of a build that reached 100 (the
  only place 0.5.1 allows it): a purl naming the image, ``pkg:generic/<platform>/<os_version>/
  <image_type>@<build_id>``; ``user`` on the artifact events: who recorded, revoked or restored it (the
  event's actor); ``name`` on ``environment.modified``: the channel's. The outcome has no field in
  0.5.1's ``build.finished``: it is ``customData.status`` (``succeeded`` or ``failed``), with the failure
  in ``customData.failure``.
- ``customData`` is our event (what ``GET /events/{seq}`` answers), ``customDataContentType`` is JSON.

The envelope follows the CDEvents CloudEvents binding: ``id``, ``source``, ``type``, ``time`` and ``subject``
are the CDEvent's, ``dataschema`` names the CDEvents schema, and ``data`` is the whole CDEvent.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from buildstate.domain import EventType
from buildstate.models import Event, Status

SPEC_VERSION = "0.5.1"


@dataclass(frozen=True, slots=True)
class CDEventType:
    subject: str
    predicate: str
    version: str

    @property
    def name(self) -> str:
        return f"dev.cdevents.{self.subject}.{self.predicate}.{self.version}"

    @property
    def schema_id(self) -> str:
        """The ``$id`` of its schema in the CDEvents release (``schemas/<subject><predicate>.json``)."""
        return f"https://cdevents.dev/{SPEC_VERSION}/schema/{self.subject}-{self.predicate}-event"


BUILD_QUEUED = CDEventType("build", "queued", "0.3.0")
BUILD_STARTED = CDEventType("build", "started", "0.3.0")
BUILD_FINISHED = CDEventType("build", "finished", "0.3.0")
ENVIRONMENT_MODIFIED = CDEventType("environment", "modified", "0.3.0")
ARTIFACT_DELETED = CDEventType("artifact", "deleted", "0.2.0")
ARTIFACT_PUBLISHED = CDEventType("artifact", "published", "0.3.0")


def _state(event: Event) -> CDEventType:
    return BUILD_FINISHED if event.status == Status.SUCCEEDED else BUILD_STARTED


MAPPING: dict[EventType, Callable[[Event], CDEventType]] = {
    EventType.CREATED: lambda _event: BUILD_QUEUED,
    EventType.RESET: lambda _event: BUILD_QUEUED,
    EventType.STATE: _state,
    EventType.FAILURE: lambda _event: BUILD_FINISHED,
    EventType.ARTIFACT: lambda _event: ARTIFACT_PUBLISHED,
    EventType.CHANNEL: lambda _event: ENVIRONMENT_MODIFIED,
    EventType.REVOKED: lambda _event: ARTIFACT_DELETED,
    EventType.RESTORED: lambda _event: ARTIFACT_PUBLISHED,
}
TYPES = (
    BUILD_QUEUED,
    BUILD_STARTED,
    BUILD_FINISHED,
    ARTIFACT_PUBLISHED,
    ENVIRONMENT_MODIFIED,
    ARTIFACT_DELETED,
)


def cdevent_type(event: Event) -> CDEventType:
    return MAPPING[event.type](event)


def artifact_id(event: Event) -> str:
    """The purl of the image a successful build made (each part percent-encoded, as purl asks)."""
    build = event.build
    name = "/".join(quote(part, safe="") for part in (build.platform, build.os_version, build.image_type))
    return f"pkg:generic/{name}@{quote(build.build_id, safe='')}"


def channel_id(event: Event) -> str:
    build = event.build
    parts = ((event.detail or {}).get("channel", ""), build.platform, build.os_version, build.image_type)
    return "channels/" + "/".join(quote(str(part), safe="") for part in parts)


def subject_id(event: Event) -> str:
    if event.type == EventType.CHANNEL:
        return channel_id(event)
    if cdevent_type(event) in {ARTIFACT_PUBLISHED, ARTIFACT_DELETED}:
        return artifact_id(event)  # the artifact events' subject is the artifact (the image's purl)
    return f"builds/{event.build.id}/attempts/{event.attempt}"


def _content(kind: CDEventType, event: Event) -> dict[str, Any]:
    if kind == BUILD_FINISHED and event.status == Status.SUCCEEDED:
        return {"artifactId": artifact_id(event)}
    if kind == ENVIRONMENT_MODIFIED:
        return {"name": str((event.detail or {}).get("channel", ""))}
    if kind in {ARTIFACT_DELETED, ARTIFACT_PUBLISHED}:
        return {"user": event.actor}
    return {}


# Fixed: a context id must stay the same for an event however often and from wherever it is sent.
_CONTEXT_ID_NAMESPACE = uuid.UUID("9d3f5b2e-6c1a-4f4e-9b7d-2a8c1e0f4b61")


def context_id(event: Event) -> str:
    return str(uuid.uuid5(_CONTEXT_ID_NAMESPACE, f"{event.build.id}/{event.seq}"))


def cdevent(event: Event, *, source: str) -> dict[str, Any]:
    """The CDEvent (what the CDEvents schema of its type validates)."""
    kind = cdevent_type(event)
    return {
        "context": {
            "specversion": SPEC_VERSION,
            "id": context_id(event),
            "source": source,
            "type": kind.name,
            "timestamp": event.recorded_at.isoformat(),
        },
        "subject": {"id": subject_id(event), "content": _content(kind, event)},
        "customData": json.loads(event.model_dump_json()),
        "customDataContentType": "application/json",
    }


def envelope(event: Event, *, source: str) -> bytes:
    """The CDEvent in a structured-mode CloudEvent (``application/cloudevents+json``)."""
    data = cdevent(event, source=source)
    kind = cdevent_type(event)
    attributes = {
        "id": data["context"]["id"],
        "source": source,
        "type": kind.name,
        "subject": data["subject"]["id"],
        "time": event.recorded_at,
        "datacontenttype": "application/json",
        "dataschema": kind.schema_id,
    }
    return JSONFormat().write(CloudEvent(attributes, data))
