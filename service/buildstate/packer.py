"""``parse_manifest``: the artifacts that a Packer manifest (the ``manifest`` post-processor's JSON) lists.

Pure: it takes the decoded JSON and gives back ``ManifestArtifact`` values or raises ``ManifestError``; no
I/O, no store. ``POST /builds/{ref}/packer-manifest`` records what it returns.

The manifest (Packer's ``post-processor/manifest``) is ``{"builds": [...], "last_run_uuid": "..."}``; each
entry is one build of one run: ``name``, ``builder_type``, ``build_time`` (0 or absent with ``strip_time``),
``files`` (``[{"name", "size"}]`` or null), ``artifact_id`` (the builder's ``Artifact.Id()``),
``packer_run_uuid`` and ``custom_data`` (a string map, or null). Without ``-force`` Packer appends every run
to the same file, so:

- Only the builds of the last run count: those whose ``packer_run_uuid`` is ``last_run_uuid``. When
  ``last_run_uuid`` is absent or empty (Packer before 1.3 wrote neither field, and a hand-made manifest may
  lack it), the last run is the one of the last entry, since Packer only ever appends: its
  ``packer_run_uuid`` (entries without one all belong to the same "unnamed" run). A ``last_run_uuid`` that
  no entry carries is refused: that file was not written by Packer.
- The same build (``packer_run_uuid`` and ``name``) twice in that run (two ``manifest`` post-processors in
  one chain) is recorded once: the later entry wins, as it saw the later artifact of the chain.

How ``artifact_id`` is read, per ``builder_type``:

- ``amazon-ebs``, ``amazon-ebssurrogate``, ``amazon-instance``, ``amazon-chroot``: ``region:ami-id`` pairs
  joined by commas -> one ``ami`` per region, platform ``aws``. ``amazon-ebsvolume``: the same shape of
  ``region:vol-id`` pairs -> ``ebs-volume``.
- ``azure-arm``, ``azure-chroot``: a Compute Gallery image version resource id (``.../galleries/G/images/D/
  versions/V``) -> ``azure-image-version``; a managed image id (``.../providers/Microsoft.Compute/images/N``)
  -> ``azure-managed-image``; a VHD URL -> ``azure-vhd`` (without its query: a SAS token is a secret).
  Platform ``azure``. The id names no region (a gallery version lives in several): ``custom_data.region``
  gives one, else it is ``''``.
- ``googlecompute``: the image name -> ``gcp-image``, platform ``gcp``; region from ``custom_data.region``.
- ``vsphere-iso``, ``vsphere-clone``, ``vsphere-supervisor``: the VM or template name. With
  ``custom_data.content_library`` -> ``vsphere-content-library-item`` named ``<library>/<name>``; else
  ``vsphere-template``, named ``<custom_data.vsphere_folder>/<name>`` when that is given (an inventory
  path), else ``<name>``. Platform ``vsphere``; region (a datacenter) from ``custom_data.region``.
- ``oracle-oci``: the image OCID -> ``oci-image``, platform ``oci``; region from ``custom_data.region``,
  else the OCID's region field.
- Builders that make local files (``qemu``, ``file``, ``virtualbox-*``, ``vmware-*``, ``hyperv-*``,
  ``parallels-*``, ``null``) have no meaningful id (``VM``, ``File``...): only their ``files`` count.
- Any other builder is never refused: its raw id becomes a ``generic`` artifact (a URL without its query,
  fragment or user info).

Every build's ``files`` become ``file`` artifacts too (external id: the name as written, region ``''``), and
every artifact but a cloud's carries platform ``None``: the build's own platform.

Labels: ``custom_data`` (validated as the service's labels are, ``models.LabelKey``/``LabelValue``; it keeps
``source_image_id``, which ancestry reads), plus ``packer.build_name`` and ``packer.builder_type``, which
win over custom data of the same name. Everything is bounded (``MAX_*``), and a ``ManifestError`` names the
field (``builds[2].artifact_id``) with a reason that never repeats the input: the file may hold anything.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from pydantic import TypeAdapter, ValidationError

from buildstate.models import MAX_ARTIFACTS_PER_BUILD, ExternalId, LabelKey, LabelValue, Region

MAX_MANIFEST_BUILDS = 1000  # entries of all runs in the file (Packer without -force keeps appending)
MAX_FILES = 256  # per build
# What parsing one manifest may produce: no build holds more. What one request may record (fewer) is the
# record's rule (models.ArtifactsRecord), which the route applies with the exact count.
MAX_ARTIFACTS = MAX_ARTIFACTS_PER_BUILD
MAX_ARTIFACT_ID = 16 * 1024  # the raw artifact_id of one build (an AMI in every region is ~1.2k)
MAX_EXTERNAL_ID = 2048  # one artifact's id (models.ExternalId): a path, a resource id, a URL
MAX_NAME = 200  # name, builder_type
MAX_RUN_UUID = 64
MAX_LABELS = 64  # as models.Labels
PACKER_LABELS = ("packer.build_name", "packer.builder_type")
MAX_CUSTOM_DATA = MAX_LABELS - len(PACKER_LABELS)

_RUN_UUID = re.compile(r"^[A-Za-z0-9._-]{0,64}$")
_AZURE_GALLERY_VERSION = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/galleries/[^/]+/images/[^/]+"
    r"/versions/[^/]+$",
    re.IGNORECASE,
)
_AZURE_MANAGED_IMAGE = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/images/[^/]+$", re.IGNORECASE
)

_REGION_RULE = "a region is letters, digits, '.', '_', ':', '/' and '-', up to 128 characters"
_AWS_KINDS = {
    "amazon-ebs": "ami",
    "amazon-ebssurrogate": "ami",
    "amazon-instance": "ami",
    "amazon-chroot": "ami",
    "amazon-ebsvolume": "ebs-volume",
}
_FILE_BUILDERS = re.compile(r"^(?:qemu|file|null|virtualbox-.+|vmware-.+|hyperv-.+|parallels-.+)$")

# The service's own rules for what parse_manifest returns, so that a manifest it reads is never refused by
# the record it becomes (and a field of the manifest, not of that record, is named when it is wrong).
_label_key: TypeAdapter[str] = TypeAdapter(LabelKey)
_label_value: TypeAdapter[str] = TypeAdapter(LabelValue)
_region: TypeAdapter[str] = TypeAdapter(Region)
_external: TypeAdapter[str] = TypeAdapter(ExternalId)


class ManifestError(ValueError):
    """A manifest that cannot be read: ``field`` says where (``builds[2].artifact_id``), ``reason`` what is
    wrong, in words of our own (never the offending value)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ManifestArtifact:
    """One artifact to record. ``platform`` None: the build's own platform."""

    platform: str | None
    region: str
    kind: str
    external_id: str
    labels: dict[str, str]


def parse_manifest(doc: object) -> list[ManifestArtifact]:
    """The artifacts of the manifest's last run, in manifest order, each (platform, region, kind,
    external_id) once (the later one wins). Raises ``ManifestError``."""
    if not isinstance(doc, dict):
        raise ManifestError(
            "manifest", "a Packer manifest is a JSON object with `builds` and `last_run_uuid`"
        )
    builds = doc.get("builds")
    if not isinstance(builds, list):
        raise ManifestError("builds", "required: the list of builds the manifest post-processor wrote")
    if not builds:
        raise ManifestError("builds", "the manifest lists no builds")
    if len(builds) > MAX_MANIFEST_BUILDS:
        raise ManifestError("builds", f"more than {MAX_MANIFEST_BUILDS} entries")
    run_uuids = [_run_uuid(entry, f"builds[{index}]") for index, entry in enumerate(builds)]
    last_run = _run_uuid_value(doc.get("last_run_uuid"), "last_run_uuid")
    if not last_run:
        last_run = run_uuids[-1]
    elif last_run not in run_uuids:
        raise ManifestError("last_run_uuid", "no entry of `builds` has this packer_run_uuid")

    # The last entry of each build of the last run (see the module docstring), in the order of first sight.
    latest: dict[str, int] = {}
    for index, entry in enumerate(builds):
        if run_uuids[index] == last_run:
            latest[_text(entry, "name", f"builds[{index}]")] = index
    artifacts: dict[tuple[str | None, str, str, str], ManifestArtifact] = {}
    for index in latest.values():
        for artifact in _artifacts_of(builds[index], f"builds[{index}]"):
            key = (artifact.platform, artifact.region, artifact.kind, artifact.external_id)
            artifacts.pop(key, None)  # the later one wins, and takes the later place
            artifacts[key] = artifact
            if len(artifacts) > MAX_ARTIFACTS:
                raise ManifestError("builds", f"the last run made more than {MAX_ARTIFACTS} artifacts")
    if not artifacts:
        raise ManifestError(
            "builds", "no build of the last run made an artifact (no artifact_id a builder names, no files)"
        )
    return list(artifacts.values())


# ---------------------------------------------------------------- one build


def _artifacts_of(entry: dict[str, Any], where: str) -> list[ManifestArtifact]:
    name = _text(entry, "name", where)
    builder = _text(entry, "builder_type", where)
    build_time = entry.get("build_time")
    if build_time is not None and (type(build_time) is not int or build_time < 0):
        raise ManifestError(f"{where}.build_time", "must be a whole number of seconds (0 or more)")
    raw_id = entry.get("artifact_id", "")
    if not isinstance(raw_id, str):
        raise ManifestError(f"{where}.artifact_id", "must be a string")
    if len(raw_id) > MAX_ARTIFACT_ID:
        raise ManifestError(f"{where}.artifact_id", f"longer than {MAX_ARTIFACT_ID} characters")
    custom = _custom_data(entry.get("custom_data"), f"{where}.custom_data")
    labels = {**custom, "packer.build_name": name, "packer.builder_type": builder}
    region = custom.get("region", "")
    if not _valid(_region, region):
        raise ManifestError(f"{where}.custom_data.region", _REGION_RULE)
    found = [
        ManifestArtifact(None, "", "file", file_name, labels)
        for file_name in _files(entry.get("files"), f"{where}.files")
    ]
    if raw_id:
        found.extend(
            _artifacts_of_id(
                builder, raw_id, region=region, custom=custom, labels=labels, field=f"{where}.artifact_id"
            )
        )
    return found


def _artifacts_of_id(
    builder: str, raw_id: str, *, region: str, custom: dict[str, str], labels: dict[str, str], field: str
) -> list[ManifestArtifact]:
    if builder in _AWS_KINDS:
        return [
            ManifestArtifact("aws", pair_region, _AWS_KINDS[builder], _external_id(image, field), labels)
            for pair_region, image in _region_pairs(raw_id, field)
        ]
    if builder in {"azure-arm", "azure-chroot"}:
        return [ManifestArtifact("azure", region, *_azure(raw_id, field), labels)]
    if builder == "googlecompute":
        return [ManifestArtifact("gcp", region, "gcp-image", _external_id(raw_id, field), labels)]
    if builder in {"vsphere-iso", "vsphere-clone", "vsphere-supervisor"}:
        return [ManifestArtifact("vsphere", region, *_vsphere(raw_id, custom, field), labels)]
    if builder == "oracle-oci":
        ocid = _external_id(raw_id, field)
        ocid_region = _oci_region(ocid, field)  # checks the OCID even when custom_data names the region
        return [ManifestArtifact("oci", region or ocid_region, "oci-image", ocid, labels)]
    if _FILE_BUILDERS.match(builder):
        return []
    return [ManifestArtifact(None, region, "generic", _external_id(_without_secrets(raw_id), field), labels)]


def _region_pairs(raw_id: str, field: str) -> list[tuple[str, str]]:
    """``us-east-1:ami-1,us-west-2:ami-2`` -> [(us-east-1, ami-1), (us-west-2, ami-2)]."""
    pairs = []
    for position, part in enumerate(raw_id.split(","), start=1):
        region, colon, image = part.strip().partition(":")
        if not colon or not region or not image or not _valid(_region, region):
            raise ManifestError(
                field,
                f"part {position} is not `region:id` (the builder writes `us-east-1:ami-1,us-west-2:ami-2`)",
            )
        pairs.append((region, image))
    return pairs


def _azure(raw_id: str, field: str) -> tuple[str, str]:
    if _AZURE_GALLERY_VERSION.match(raw_id):
        return "azure-image-version", _external_id(raw_id, field)
    if _AZURE_MANAGED_IMAGE.match(raw_id):
        return "azure-managed-image", _external_id(raw_id, field)
    url = _url(raw_id)
    if url and url.scheme == "https" and url.path.lower().endswith(".vhd"):
        return "azure-vhd", _external_id(_without_secrets(raw_id), field)
    raise ManifestError(
        field,
        "not an Azure Compute Gallery image version id, a managed image id or a VHD URL (what azure-arm "
        "writes: /subscriptions/.../providers/Microsoft.Compute/galleries/G/images/D/versions/V, "
        ".../Microsoft.Compute/images/NAME, https://....vhd)",
    )


def _vsphere(raw_id: str, custom: dict[str, str], field: str) -> tuple[str, str]:
    name = _external_id(raw_id, field)
    if library := custom.get("content_library"):
        return "vsphere-content-library-item", _external_id(f"{library.strip('/')}/{name}", field)
    if folder := custom.get("vsphere_folder"):
        return "vsphere-template", _external_id(f"{folder.rstrip('/')}/{name}", field)
    return "vsphere-template", name


def _oci_region(ocid: str, field: str) -> str:
    """An OCID is ``ocid1.<type>.<realm>.<region>.<unique id>``; an image's names its region."""
    parts = ocid.split(".")
    if len(parts) < 5 or parts[0] != "ocid1" or parts[1] != "image":
        raise ManifestError(field, "not an image OCID (ocid1.image.<realm>.<region>.<id>)")
    region = parts[3]
    if not region or not _valid(_region, region):
        raise ManifestError(field, "the OCID's region field is not a region")
    return region


# ---------------------------------------------------------------- fields


def _run_uuid(entry: object, where: str) -> str:
    if not isinstance(entry, dict):
        raise ManifestError(where, "each build is a JSON object")
    return _run_uuid_value(entry.get("packer_run_uuid"), f"{where}.packer_run_uuid")


def _run_uuid_value(value: object, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or not _RUN_UUID.match(value):
        raise ManifestError(field, f"a run id is a string of up to {MAX_RUN_UUID} letters, digits and '-'")
    return value


def _text(entry: dict[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"{where}.{key}", "required: a non-empty string")
    if len(value) > MAX_NAME:
        raise ManifestError(f"{where}.{key}", f"longer than {MAX_NAME} characters")
    if _has_control(value):
        raise ManifestError(f"{where}.{key}", "holds control characters")
    return value


def _files(value: object, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestError(field, "a list of {name, size}, or null")
    if len(value) > MAX_FILES:
        raise ManifestError(field, f"more than {MAX_FILES} files")
    names = []
    for index, item in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(item, dict):
            raise ManifestError(where, "a file is an object {name, size}")
        size = item.get("size")
        if size is not None and (type(size) is not int or size < 0):
            raise ManifestError(f"{where}.size", "must be a whole number of bytes (0 or more)")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ManifestError(f"{where}.name", "required: a non-empty string")
        names.append(_external_id(name, f"{where}.name"))
    return names


def _custom_data(value: object, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ManifestError(field, "an object of strings, or null")
    if len(value) > MAX_CUSTOM_DATA:
        raise ManifestError(field, f"more than {MAX_CUSTOM_DATA} keys (they become labels)")
    for position, (key, item) in enumerate(value.items(), start=1):
        if not _valid(_label_key, key):
            raise ManifestError(
                field,
                f"key {position} is not a label key (a letter or digit, then letters, digits, '.', '_', "
                "'/' or '-', up to 64 characters)",
            )
        if not isinstance(item, str) or not _valid(_label_value, item):
            raise ManifestError(f"{field}.{key}", "a label value is a string of up to 1024 characters")
    return dict(value)


def _external_id(value: str, field: str) -> str:
    value = value.strip()
    if not value:
        raise ManifestError(field, "an artifact's id may not be empty")
    if len(value) > MAX_EXTERNAL_ID:
        raise ManifestError(field, f"an artifact's id is at most {MAX_EXTERNAL_ID} characters")
    if not _valid(_external, value):
        raise ManifestError(
            field, "an artifact's id is one line of printable characters, without a credential"
        )
    return value


def _valid(adapter: TypeAdapter[str], value: str) -> bool:
    try:
        adapter.validate_python(value, strict=True)
    except ValidationError:
        return False
    return True


def _has_control(value: str) -> bool:
    return any(unicodedata.category(char) in {"Cc", "Cf", "Cs", "Zl", "Zp"} for char in value)


def _url(value: str) -> SplitResult | None:
    """``value`` as an absolute URL, or None when it is none (or one Python cannot split: [bad-ipv6])."""
    try:
        url = urlsplit(value.strip())
    except ValueError:
        return None
    return url if url.scheme and url.netloc else None


def _without_secrets(raw_id: str) -> str:
    """A URL without what may hold a credential (user info, query: a SAS token, a presigned signature,
    fragment); anything else as it is."""
    url = _url(raw_id)
    if url is None:
        return raw_id
    host = url.netloc.rpartition("@")[2]
    return urlunsplit((url.scheme, host, url.path, "", ""))
