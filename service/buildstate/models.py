"""Pydantic models: they validate every request body and shape every response.

The OpenAPI document is generated from these classes (``web/openapi.py``), so the published contract and the
code that enforces it cannot drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    model_validator,
)

from buildstate.domain import (
    MAX_STATE,
    STATE_STEP,
    EventType,  # the enum lives with its rules (domain.EVENT_RULES)
    build_uuid_of,
)
from buildstate.redaction import redact


class Credential:
    """``Annotated[str, Credential()]``: a response field that holds a secret (an API key, a token, a
    signing secret), shown once. Every answer of a route whose response model has one is sent
    ``Cache-Control: no-store`` (``web.routes.Route.carries_secret``), so no cache keeps it."""


def holds_credential(model: type[BaseModel]) -> bool:
    """Whether ``model`` (or a model inside it) has a ``Credential`` field."""
    for info in model.model_fields.values():
        if any(isinstance(meta, Credential) for meta in info.metadata):
            return True
        for inner in (info.annotation, *get_args(info.annotation)):
            if isinstance(inner, type) and issubclass(inner, BaseModel) and holds_credential(inner):
                return True
    return False


Slug = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$"),
    Field(description="Lower-case letters, digits, '.', '_' and '-'; 1 to 64 characters."),
]


def _not_a_build_uuid(value: str) -> str:
    """A build_id that reads as a UUID would name two builds (``domain.build_uuid_of``): refused."""
    if build_uuid_of(value) is not None:
        raise ValueError(
            "a build_id may not read as a UUID (in any spelling: upper case, no hyphens, urn:uuid:, ...): "
            "a reference that reads as one names the build with that id, so this build_id would name "
            "another build; add a prefix or suffix such as 'build-'"
        )
    return value


BuildName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,199}$"),
    AfterValidator(_not_a_build_uuid),
    Field(
        description="The pipeline's name for the build: letters, digits, '.', '_', '-', ':', '+'; never "
        "something that reads as a UUID (that spelling names a build by its id)."
    ),
]
LabelKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")]
LabelValue = Annotated[str, StringConstraints(max_length=1024)]


def utc_time(value: datetime) -> datetime:
    """A time a client sent, in UTC (UTC assumed without an offset), or ValueError when that is past what
    Python and so both stores can hold (0001-01-01T00:00:00+14:00 is in the year 0 in UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range: in UTC it must fall within the years 1 to 9999") from None


QueryTime = Annotated[
    datetime,
    AfterValidator(utc_time),
    Field(description="ISO-8601; UTC if no offset; within the years 1 to 9999 once in UTC."),
]
# Free-form JSON (a failure's details, Concourse's instance vars): bounded, so that one request cannot
# hand the store megabytes of nesting to serialise, write three times and send to every reader.
MAX_JSON_DEPTH = 32
MAX_JSON_VALUES = 10_000
MAX_JSON_TEXT = 64 * 1024  # characters in all keys and strings together


def _bounded_json(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` if it is at most ``MAX_JSON_DEPTH`` deep, ``MAX_JSON_VALUES`` values and ``MAX_JSON_TEXT``
    characters; stops at the first limit passed, so refusing a huge value costs no more than the limits."""
    values, text = 0, 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        values += 1
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
        if isinstance(item, dict | list) and values + len(stack) + len(item) > MAX_JSON_VALUES:
            raise ValueError(f"more than {MAX_JSON_VALUES} values (objects, arrays, strings, numbers)")
        if isinstance(item, dict):
            text += sum(len(key) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            text += len(item)
        if text > MAX_JSON_TEXT:
            raise ValueError(f"more than {MAX_JSON_TEXT} characters of keys and strings")
    return value


FreeJson = Annotated[
    dict[str, Any],
    AfterValidator(_bounded_json),
    Field(
        description=f"Any JSON object up to {MAX_JSON_DEPTH} levels deep, {MAX_JSON_VALUES} values and "
        f"{MAX_JSON_TEXT} characters of keys and strings."
    ),
]
Labels = Annotated[dict[LabelKey, LabelValue], Field(max_length=64)]
ShortText = Annotated[str, StringConstraints(max_length=200)]
Message = Annotated[str, StringConstraints(max_length=4000)]
StateCode = Annotated[
    StrictInt,
    Field(ge=0, le=MAX_STATE, multiple_of=STATE_STEP, description="0..100 in steps of 5; 100 = done."),
]


class Status(StrEnum):
    RUNNING = "running"
    FAILED = "failed"
    SUCCEEDED = "succeeded"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Provenance(_Request):
    """Where a change came from; the Concourse resource fills it from the build's environment."""

    team: ShortText | None = None
    pipeline: ShortText | None = None
    instance_vars: FreeJson | None = None
    job: ShortText | None = None
    build_name: ShortText | None = None
    build_id: ShortText | None = None
    build_url: Annotated[str, StringConstraints(max_length=2000)] | None = None
    build_status: ShortText | None = None
    created_by: ShortText | None = None


BuildRefText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    Field(description="A build's UUID or its build_id."),
]
# Why a channel moved or a build was revoked: the history and the 410s show it, so it must say something.
Reason = Annotated[
    str,
    StringConstraints(min_length=1, max_length=2000, pattern=r"\S"),
    Field(description="Why, in words: 1 to 2000 characters, not only spaces."),
]
MAX_PARENTS = 16  # named in one request, and held by one build


class ParentLink(_Request):
    build: BuildRefText
    channel: Slug | None = Field(
        default=None,
        description="The channel the parent was taken from: the child is out of date once the parent no "
        "longer heads it (in the parent's platform x OS version x image type).",
    )


ParentItem = Annotated[
    BuildRefText | ParentLink, Field(description="A build reference, or one with its channel.")
]
ParentList = Annotated[list[ParentItem], Field(max_length=MAX_PARENTS)]


class BuildCreate(_Request):
    platform: Slug
    os_version: Slug
    image_type: Slug
    build_id: BuildName
    labels: Labels = Field(default_factory=dict)
    provenance: Provenance | None = None
    parents: ParentList = Field(
        default_factory=list, description="The builds this one was built from (GET /builds/{ref}/ancestry)."
    )


class StateChange(_Request):
    state_code: StateCode
    message: Message | None = None
    provenance: Provenance | None = None


class FailureReport(_Request):
    error_message: Annotated[str, StringConstraints(min_length=1, max_length=4000)]
    error_code: ShortText | None = None
    component: ShortText | None = None
    details: FreeJson | None = None
    provenance: Provenance | None = None


class ResetRequest(_Request):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    provenance: Provenance | None = None


# ---------------------------------------------------------------- artifacts

# Artifacts one request may name, and one build may hold: every answer that lists a build's artifacts is
# bounded, and so is the event that announces them.
MAX_ARTIFACTS_PER_REQUEST = 200
MAX_ARTIFACTS_PER_BUILD = 1000
MAX_ARTIFACTS_TEXT = 128 * 1024


def _one_line(value: str) -> str:
    """An external id is answered as one line of text (``Accept: text/plain``): no control characters,
    no line or paragraph separators, nothing invisible at either end."""
    if not value.isprintable() or value != value.strip():
        raise ValueError("an external id is one line of printable characters, without spaces at either end")
    return value


def _no_credential(value: str) -> str:
    """An external id is copied to the feed, every webhook, the dashboard and the resource's files: one
    that carries a credential (a SAS token, a presigned signature, a URL's password) is refused."""
    if redact(value) != value:
        raise ValueError(
            "an external id may not carry a credential (a URL's password, or a query value such as a SAS "
            "token or a signature): record the URL without its query and user info"
        )
    return value


ArtifactKind = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$"),
    Field(
        description="What the artifact is: `ami`, `azure-image-version`, `azure-managed-image`, `gcp-image`, "
        "`vsphere-template`, `vsphere-content-library-item`, `oci-image`, `file`, or another short slug "
        "(lower-case letters, digits, '.', '_', '-'; 1 to 64 characters)."
    ),
]
Region = Annotated[
    str,
    StringConstraints(pattern=r"^([A-Za-z0-9][A-Za-z0-9._:/-]{0,127})?$"),
    # One region, one spelling: `EU-West-1` and `eu-west-1` would otherwise be two artifacts of one AMI,
    # and a lookup in the other case would miss it. Recorded and looked up in lower case.
    AfterValidator(str.lower),
    Field(
        description="The cloud's region (`eu-west-1`, `westeurope`, `europe-west1`), or empty for a "
        "region-less target; letters, digits, '.', '_', ':', '/', '-', at most 128 characters; "
        "case-insensitive (recorded and compared in lower case)."
    ),
]
ExternalId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=2048),
    AfterValidator(_one_line),
    AfterValidator(_no_credential),
    Field(
        description="The cloud's id of the artifact: `ami-0abc...`, a gallery image version's resource id, a "
        "GCP image's name or self link, a vSphere inventory path; one line, at most 2048 characters, without "
        "a credential (no URL password, no SAS token or signature in a query)."
    ),
]


class ArtifactIn(_Request):
    """One artifact to record. ``(platform, region, kind, external_id)`` names it within its build."""

    platform: Slug | None = Field(
        default=None, description="The cloud it lives in; the build's platform when left out."
    )
    region: Region = ""
    kind: ArtifactKind
    external_id: ExternalId
    labels: Labels = Field(default_factory=dict)


class ArtifactsRecord(_Request):
    """Artifacts of a build: those it does not have yet are recorded with one ``artifact`` event; those it
    has (with the same labels) are a replay."""

    artifacts: Annotated[
        list[ArtifactIn],
        Field(
            min_length=1,
            max_length=MAX_ARTIFACTS_PER_REQUEST,
            description=f"1 to {MAX_ARTIFACTS_PER_REQUEST} artifacts, with at most {MAX_ARTIFACTS_TEXT} "
            "characters of external ids and labels in all.",
        ),
    ]
    provenance: Provenance | None = None

    @model_validator(mode="after")
    def _bounded_text(self) -> ArtifactsRecord:
        # The event that announces them carries them all, to every reader of the feed and every webhook.
        text = sum(
            len(item.external_id) + sum(len(key) + len(value) for key, value in item.labels.items())
            for item in self.artifacts
        )
        if text > MAX_ARTIFACTS_TEXT:
            raise ValueError(
                f"the artifacts hold {text} characters of external ids and labels; at most "
                f"{MAX_ARTIFACTS_TEXT} are recorded at once"
            )
        return self


class PackerFile(BaseModel):
    name: str
    size: int | None = None


class PackerManifestBuild(BaseModel):
    """One entry of a Packer manifest's ``builds``, as the ``manifest`` post-processor writes it."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(description="The build's name in the template.")
    builder_type: str = Field(description="`amazon-ebs`, `azure-arm`, `googlecompute`, `vsphere-iso`, ...")
    build_time: int | None = Field(default=None, description="Unix time of the build (0 with strip_time).")
    files: list[PackerFile] | None = Field(default=None, description="What builders that make files made.")
    artifact_id: str | None = Field(
        default=None, description="The builder's artifact id (`us-east-1:ami-1,us-west-2:ami-2` for AWS)."
    )
    packer_run_uuid: str | None = Field(default=None, description="The run that wrote the entry.")
    custom_data: dict[str, str] | None = Field(
        default=None,
        description="The post-processor's custom_data: the artifacts' labels (`region`: theirs).",
    )


class PackerManifest(BaseModel):
    """``packer-manifest.json`` as Packer's ``manifest`` post-processor writes it: the builds of every run
    it appended, and the last run's id; only the last run's builds are recorded. What is checked is
    ``buildstate.packer``'s reading of it, whose 422 names the field (``builds[2].artifact_id``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    builds: list[PackerManifestBuild]
    last_run_uuid: str | None = Field(default=None, description="The run whose builds are recorded.")


class JsonObject(BaseModel):
    """Any JSON object: a body read with every guard of ``web.requests.parse_body`` (size, NUL, values,
    finite numbers) and checked by what reads it next."""

    model_config = ConfigDict(extra="allow", frozen=True)


# ---------------------------------------------------------------- responses


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class Failure(_Response):
    error_message: str
    error_code: str | None = None
    component: str | None = None
    details: dict[str, Any] | None = None


class Build(_Response):
    id: UUID
    build_id: str
    platform: str
    os_version: str
    image_type: str
    state_code: int
    status: Status
    attempt: int
    labels: dict[str, str]
    message: str | None
    failure: Failure | None
    created_at: datetime
    updated_at: datetime
    last_event_seq: int


class EventBuild(_Response):
    """The parts of a build that never change after creation."""

    id: UUID
    build_id: str
    platform: str
    os_version: str
    image_type: str
    labels: dict[str, str]
    created_at: datetime


class Artifact(_Response):
    platform: str
    region: str = Field(description="Empty for a region-less target.")
    kind: str
    external_id: str
    labels: dict[str, str]
    attempt: int = Field(description="The build's attempt it was recorded in.")
    event_seq: int = Field(description="The `artifact` event that recorded it.")
    recorded_at: datetime
    actor: str


class Event(_Response):
    seq: int
    type: EventType
    recorded_at: datetime
    attempt: int
    state_code: int = Field(description="The build's state code right after this event.")
    from_state_code: int | None
    status: Status = Field(description="The build's status right after this event.")
    message: str | None
    failure: Failure | None
    reason: str | None
    actor: str
    provenance: dict[str, Any] | None
    duration_ms: int | None = Field(description="Time since the build's previous event.")
    build: EventBuild
    detail: dict[str, Any] | None = Field(
        default=None,
        description="What the event carries beyond the build's fields: for an `artifact` event, "
        '`{"artifacts": [...]}`, the artifacts it recorded (platform, region, kind, external_id, labels); '
        "for a channel move its channel, from, to and cause; for a revocation or a restore the revocation, "
        "revoked_by and whether it is inherited.",
    )


class BuildWithEvent(Build):
    event: Event = Field(description="The event this request recorded, or the current one on replay.")
    replayed: bool = Field(
        default=False,
        description="True when nothing was recorded because the change was already the build's state (the "
        "same state code again, whatever its message; the same failure; the same build): `event` is the "
        "earlier event. The answer then carries `Idempotent-Replayed: true`.",
    )


class BuildDetail(Build):
    artifacts: list[Artifact] = Field(description="What the build made, in the order it was recorded.")


class ArtifactsWritten(BuildWithEvent):
    """The build, the ``artifact`` event this request recorded (on replay: the latest event that recorded
    any of them), and the artifacts the request named, as recorded."""

    artifacts: list[Artifact]


class ArtifactList(_Response):
    id: UUID
    build_id: str
    artifacts: list[Artifact]


class ArtifactMatch(Artifact):
    """``GET /artifacts/latest``: the artifact, and the build that made it."""

    build: Build


class BuildState(_Response):
    id: UUID
    build_id: str
    state_code: int
    status: Status
    attempt: int
    message: str | None
    failure: Failure | None
    updated_at: datetime


class BuildPage(_Response):
    builds: list[Build]
    next_cursor: str | None


class EventPage(_Response):
    events: list[Event]
    next_after: int = Field(description="Pass as ?after= to continue; the last seq returned.")
    has_more: bool


class History(_Response):
    build: Build
    events: list[Event]
    artifacts: list[Artifact] = Field(description="What the build made, in the order it was recorded.")


class BuildIdent(_Response):
    id: UUID
    build_id: str


class CellRevocation(_Response):
    reason: str
    inherited: bool = Field(description="Revoked because `revoked_by`, an ancestor, was.")
    revoked_by: BuildIdent


class MatrixCell(_Response):
    platform: str
    os_version: str
    image_type: str
    build: Build
    artifacts_by_region: dict[str, int] = Field(
        description="How many artifacts the build holds in each region ('' for region-less ones)."
    )
    revocation: CellRevocation | None = Field(
        description="The build's revocation in force (its own before an inherited one); null if none."
    )


class FailureGroup(_Response):
    component: str | None
    error_code: str | None
    count: int
    last_seen: datetime
    last_seq: int = Field(description="The newest failure event of the group (GET /events/{seq}).")


class StepDuration(_Response):
    state_code: int = Field(description="The state a build spent the time in before moving on.")
    median_ms: float
    samples: int


class TransitionDuration(_Response):
    """The time from one state to one next state (``10 -> 25``), over the same samples as step_durations."""

    from_state_code: int
    state_code: int = Field(description="The state it moved on to.")
    median_ms: float
    samples: int


class Summary(_Response):
    counts: dict[Status, int]
    total: int
    matrix: list[MatrixCell]
    failures: list[FailureGroup]
    step_durations: list[StepDuration] = Field(
        description="Per state, the time builds spent in it before any next state (the newest 500 moves out "
        "of each state)."
    )
    transition_durations: list[TransitionDuration] = Field(
        description="The same moves per (state, next state): what one step of one build compares with."
    )
    window_hours: int
    generated_at: datetime


class Health(_Response):
    status: Literal["ok"]
    version: str


class Ready(_Response):
    status: Literal["ready", "unavailable"]
    store: str
    schema_version: int | None
    expected_schema_version: int
    detail: str | None = None


class Root(_Response):
    name: str
    version: str
    links: dict[str, str]


# ---------------------------------------------------------------- ancestry, channels, revocations


class ParentsAdd(_Request):
    parents: Annotated[list[ParentItem], Field(min_length=1, max_length=MAX_PARENTS)]


class RevokeRequest(_Request):
    reason: Reason
    at: QueryTime | None = Field(
        default=None, description="When it takes effect; now when left out or not in the future."
    )


class RestoreRequest(_Request):
    reason: Reason


class ChannelRequirements(_Request):
    labels: Labels = Field(
        default_factory=dict, description="Labels (key: value) a build must carry to be assigned."
    )


class ChannelAssign(_Request):
    platform: Slug
    os_version: Slug
    image_type: Slug
    build: BuildRefText
    reason: Reason
    requires: ChannelRequirements | None = Field(
        default=None,
        description="Replaces the channel's requirements: this assignment and every later one must meet "
        "them.",
    )


class Revocation(_Response):
    id: int
    build: UUID = Field(description="The build it revokes.")
    revoked_by: BuildIdent = Field(description="The build that was revoked: itself, or the ancestor.")
    inherited: bool
    reason: str
    actor: str
    at: datetime = Field(description="When it takes (or took) effect.")
    created_at: datetime
    fired_at: datetime | None = Field(description="When it took effect; null while scheduled.")
    lifted_at: datetime | None
    lifted_by: str | None
    lift_reason: str | None


class RevocationResult(_Response):
    build: Build
    revocation: Revocation
    state: Literal["revoked", "scheduled", "restored"]
    inherited: list[BuildIdent] = Field(
        description="The descendants this request revoked (or restored) with it."
    )
    channels_emptied: list[str] = Field(description="The channels that lost their head to it (name@bucket).")
    replayed: bool = False


class ChannelMove(_Response):
    id: int
    from_build: BuildIdent | None
    to_build: BuildIdent | None
    cause: Literal["assign", "revoked"]
    reason: str
    actor: str
    at: datetime
    event_seq: int | None


class Channel(_Response):
    name: str
    platform: str
    os_version: str
    image_type: str
    head: Build | None = Field(description="The build to use; null when none (never assigned, or revoked).")
    requires: dict[str, Any]
    moves: int
    created_at: datetime
    updated_at: datetime


class ChannelAssigned(_Response):
    channel: Channel
    move: ChannelMove | None = Field(description="The history row this request added; null on a replay.")
    replayed: bool = False


class ChannelList(_Response):
    channels: list[Channel]


class ChannelDetail(_Response):
    channel: Channel
    history: list[ChannelMove] = Field(description="Newest first.")


class AncestryNode(_Response):
    build: Build
    relation: Literal["self", "ancestor", "descendant"]
    depth: int = Field(description="Generations away (the shortest path).")
    revocation: Revocation | None = Field(description="The revocation in force, own first; null if none.")
    out_of_date: bool = Field(description="A parent no longer heads the channel it was taken from.")


class AncestryEdge(_Response):
    child: UUID
    parent: UUID
    channel: str | None
    source: Literal["api", "artifact"]
    created_at: datetime
    out_of_date: bool


class Ancestry(_Response):
    build: UUID
    nodes: list[AncestryNode]
    edges: list[AncestryEdge]
    truncated: bool = Field(description="More relatives exist than one answer holds.")


class ProblemDetails(_Response):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None
