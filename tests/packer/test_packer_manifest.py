"""Reading Packer manifests (``buildstate.packer``): one hand-written manifest per builder, written from the
manifest post-processor's documented format (tests/fixtures/packer), the last-run rules, and malformed files
refused with the field named and the input never repeated."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildstate.packer import (
    MAX_ARTIFACTS,
    MAX_CUSTOM_DATA,
    MAX_EXTERNAL_ID,
    MAX_FILES,
    MAX_MANIFEST_BUILDS,
    ManifestArtifact,
    ManifestError,
    parse_manifest,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures/packer"
RUN = "6a3c2f1e-8b4d-4c2a-9f0e-1d2c3b4a5e6f"
OLD_RUN = "0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f"
SUBSCRIPTION = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/images-rg"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def packer(name: str, builder: str, **custom: str) -> dict[str, str]:
    return {**custom, "packer.build_name": name, "packer.builder_type": builder}


def build(artifact_id: str = "us-east-1:ami-0123abcd", **fields: Any) -> dict[str, Any]:
    """One entry of ``builds`` as Packer writes it."""
    return {
        "name": "amazon-ebs.base",
        "builder_type": "amazon-ebs",
        "build_time": 1764590000,
        "files": None,
        "artifact_id": artifact_id,
        "packer_run_uuid": RUN,
        "custom_data": None,
        **fields,
    }


def manifest(*builds: dict[str, Any], last_run_uuid: str | None = RUN) -> dict[str, Any]:
    doc: dict[str, Any] = {"builds": list(builds)}
    if last_run_uuid is not None:
        doc["last_run_uuid"] = last_run_uuid
    return doc


EXPECTED: dict[str, list[ManifestArtifact]] = {
    "amazon-ebs": [
        ManifestArtifact(
            "aws",
            region,
            "ami",
            ami,
            packer(
                "amazon-ebs.rhel8",
                "amazon-ebs",
                source_image_id="ami-0fedcba9876543210",
                os_version="rhel-8.8",
                image_type="base",
            ),
        )
        for region, ami in (("eu-west-1", "ami-0a1b2c3d4e5f60718"), ("us-east-1", "ami-0123456789abcdef0"))
    ],
    "amazon-ebssurrogate": [
        ManifestArtifact(
            "aws",
            "us-west-2",
            "ami",
            "ami-0aaaabbbbccccdddd",
            packer("amazon-ebssurrogate.hardened", "amazon-ebssurrogate"),
        )
    ],
    "amazon-instance": [
        ManifestArtifact(
            "aws",
            "ap-southeast-2",
            "ami",
            "ami-0123abcd",
            packer("amazon-instance.legacy", "amazon-instance"),
        )
    ],
    "azure-arm-managed-image": [
        ManifestArtifact(
            "azure",
            "westeurope",
            "azure-managed-image",
            f"{SUBSCRIPTION}/providers/Microsoft.Compute/images/ubuntu-2204-base-20261201",
            packer("azure-arm.ubuntu", "azure-arm", region="westeurope"),
        )
    ],
    "azure-arm-gallery": [
        ManifestArtifact(
            "azure",
            "",
            "azure-image-version",
            f"{SUBSCRIPTION}/providers/Microsoft.Compute/galleries/golden/images/ubuntu-2204/versions/1.0.42",
            packer("azure-arm.ubuntu", "azure-arm"),
        )
    ],
    "googlecompute": [
        ManifestArtifact(
            "gcp",
            "",
            "gcp-image",
            "debian-12-base-20261201",
            packer("googlecompute.debian", "googlecompute", source_image_id="debian-12-bookworm-v20261110"),
        )
    ],
    "vsphere-iso": [
        ManifestArtifact(
            "vsphere",
            "dc1",
            "vsphere-template",
            "/dc1/vm/templates/rhel9-template",
            packer("vsphere-iso.rhel9", "vsphere-iso", vsphere_folder="/dc1/vm/templates", region="dc1"),
        )
    ],
    "vsphere-clone": [
        ManifestArtifact(
            "vsphere",
            "",
            "vsphere-content-library-item",
            "golden-images/rhel9-hardened",
            packer("vsphere-clone.rhel9", "vsphere-clone", content_library="golden-images"),
        )
    ],
    "oracle-oci": [
        ManifestArtifact(
            "oci",
            "eu-frankfurt-1",
            "oci-image",
            "ocid1.image.oc1.eu-frankfurt-1.aaaaaaaaexampleuniqueidentifier0123456789",
            packer("oracle-oci.ol8", "oracle-oci"),
        )
    ],
    "qemu": [ManifestArtifact(None, "", "file", "output-alma9/alma9.qcow2", packer("qemu.alma9", "qemu"))],
    "file": [
        ManifestArtifact(None, "", "file", name, packer("file.cloud-init", "file"))
        for name in ("user-data", "meta-data")
    ],
    "unknown-builder": [
        ManifestArtifact(
            None,
            "",
            "generic",
            "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
            packer("docker.app", "docker"),
        )
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_builders_manifest_gives_its_artifacts(name: str) -> None:
    assert parse_manifest(fixture(name)) == EXPECTED[name]


def test_every_fixture_is_covered() -> None:
    names = {path.stem for path in FIXTURES.glob("*.json")}
    assert names == {*EXPECTED, "two-runs", "duplicate-run"}


def test_only_the_last_runs_builds_count() -> None:
    assert parse_manifest(fixture("two-runs")) == [
        ManifestArtifact(
            "aws", "eu-west-1", "ami", "ami-0000000000000cccc", packer("amazon-ebs.rhel8", "amazon-ebs")
        ),
        ManifestArtifact(
            "aws", "us-east-1", "ami", "ami-0000000000000bbbb", packer("amazon-ebs.rhel8", "amazon-ebs")
        ),
        ManifestArtifact(
            "gcp",
            "",
            "gcp-image",
            "rhel-8-base-20261201",
            packer("googlecompute.rhel8", "googlecompute"),
        ),
    ]


def test_the_last_run_may_be_an_earlier_one_when_last_run_uuid_says_so() -> None:
    doc = fixture("two-runs")
    doc["last_run_uuid"] = OLD_RUN
    assert [a.external_id for a in parse_manifest(doc)] == ["ami-0000000000000aaaa"]


def test_a_build_twice_in_one_run_is_recorded_once_the_later_entry_winning() -> None:
    assert parse_manifest(fixture("duplicate-run")) == [
        ManifestArtifact(
            "aws",
            "us-east-1",
            "ami",
            "ami-0000000000000dddd",
            packer("amazon-ebs.rhel8", "amazon-ebs", stage="copied"),
        )
    ]


def test_the_same_artifact_from_two_builds_of_the_run_is_listed_once() -> None:
    doc = manifest(
        build("us-east-1:ami-0123abcd", name="amazon-ebs.a"),
        build("us-east-1:ami-0123abcd", name="amazon-ebs.b"),
    )
    assert parse_manifest(doc) == [
        ManifestArtifact("aws", "us-east-1", "ami", "ami-0123abcd", packer("amazon-ebs.b", "amazon-ebs"))
    ]


@pytest.mark.parametrize("last_run_uuid", [None, ""])
def test_without_last_run_uuid_the_run_of_the_last_entry_counts(last_run_uuid: str | None) -> None:
    doc = manifest(
        build("us-east-1:ami-00000001", packer_run_uuid=OLD_RUN),
        build("us-east-1:ami-00000002"),
        build("us-east-1:ami-00000003", packer_run_uuid=OLD_RUN, name="amazon-ebs.other"),
        build("us-east-1:ami-00000004", name="amazon-ebs.other"),
        last_run_uuid=last_run_uuid,
    )
    assert [a.external_id for a in parse_manifest(doc)] == ["ami-00000002", "ami-00000004"]


def test_a_manifest_from_before_run_uuids_counts_every_build() -> None:
    """Packer before 1.3 wrote neither ``packer_run_uuid`` nor ``last_run_uuid``."""
    first, second = build("us-east-1:ami-00000001"), build("eu-west-1:ami-00000002", name="amazon-ebs.eu")
    for entry in (first, second):
        del entry["packer_run_uuid"]
        del entry["custom_data"]
    assert [a.region for a in parse_manifest(manifest(first, second, last_run_uuid=None))] == [
        "us-east-1",
        "eu-west-1",
    ]


def test_strip_time_and_missing_build_time_are_read() -> None:
    without = build()
    del without["build_time"]
    for entry in (build(build_time=0), without):
        assert [a.external_id for a in parse_manifest(manifest(entry))] == ["ami-0123abcd"]


def test_files_of_a_cloud_build_are_recorded_besides_its_image() -> None:
    entry = build(files=[{"name": "output/manifest.txt", "size": 10}])
    assert [(a.kind, a.external_id) for a in parse_manifest(manifest(entry))] == [
        ("file", "output/manifest.txt"),
        ("ami", "ami-0123abcd"),
    ]


def test_an_image_skipped_by_the_builder_records_nothing_of_that_build() -> None:
    """amazon-ebs with skip_create_ami writes an empty artifact_id: the other builds still count."""
    doc = manifest(build(""), build("gcp-image-1", name="googlecompute.x", builder_type="googlecompute"))
    assert [a.kind for a in parse_manifest(doc)] == ["gcp-image"]


def test_an_ebs_volume_build_gives_volumes_per_region() -> None:
    entry = build("us-east-1:vol-0a,us-east-1:vol-0b", builder_type="amazon-ebsvolume")
    assert [(a.region, a.kind, a.external_id) for a in parse_manifest(manifest(entry))] == [
        ("us-east-1", "ebs-volume", "vol-0a"),
        ("us-east-1", "ebs-volume", "vol-0b"),
    ]


def test_a_vsphere_template_without_folder_is_named_as_packer_names_it() -> None:
    entry = build("Ubuntu 24.04 Template", builder_type="vsphere-iso")
    assert [(a.kind, a.external_id) for a in parse_manifest(manifest(entry))] == [
        ("vsphere-template", "Ubuntu 24.04 Template")
    ]


def test_a_custom_region_names_the_region_of_a_region_less_id() -> None:
    entry = build("debian-12", builder_type="googlecompute", custom_data={"region": "europe-west1"})
    assert [a.region for a in parse_manifest(manifest(entry))] == ["europe-west1"]


def test_the_oci_region_comes_from_custom_data_before_the_ocid() -> None:
    entry = build(
        "ocid1.image.oc1.iad.aaaaexample", builder_type="oracle-oci", custom_data={"region": "us-ashburn-1"}
    )
    assert [a.region for a in parse_manifest(manifest(entry))] == ["us-ashburn-1"]


def test_packer_labels_win_over_custom_data_of_the_same_name() -> None:
    entry = build(custom_data={"packer.build_name": "spoofed", "team": "images"})
    (artifact,) = parse_manifest(manifest(entry))
    assert artifact.labels == {
        "team": "images",
        "packer.build_name": "amazon-ebs.base",
        "packer.builder_type": "amazon-ebs",
    }


@pytest.mark.parametrize(
    ("builder", "raw_id", "kind", "external_id"),
    [
        (
            "azure-arm",
            "https://acct.blob.core.windows.net/system/Microsoft.Compute/Images/images/packer-osDisk.1.vhd"
            "?sv=2024-01-01&sig=c2VjcmV0LXNpZ25hdHVyZQ%3D%3D&se=2026-12-31",
            "azure-vhd",
            "https://acct.blob.core.windows.net/system/Microsoft.Compute/Images/images/packer-osDisk.1.vhd",
        ),
        (
            "my-plugin",
            "https://deployer:hunter2-password@images.example.com/build/1?token=abcdef123456#frag",
            "generic",
            "https://images.example.com/build/1",
        ),
    ],
)
def test_credentials_in_a_url_id_are_never_kept(
    builder: str, raw_id: str, kind: str, external_id: str
) -> None:
    (artifact,) = parse_manifest(manifest(build(raw_id, builder_type=builder)))
    assert (artifact.kind, artifact.external_id) == (kind, external_id)


def test_an_unknown_builder_with_an_odd_id_is_kept_not_refused() -> None:
    entry = build("http://[not-a-host/x", builder_type="strange-cloud")
    assert [(a.kind, a.external_id) for a in parse_manifest(manifest(entry))] == [
        ("generic", "http://[not-a-host/x")
    ]


def test_a_null_builder_with_no_files_makes_no_artifact_and_the_manifest_says_so() -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(manifest(build("Null", builder_type="null")))
    assert caught.value.field == "builds"


SECRET = "AKIAIOSFODNN7EXAMPLE-wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def _with(path: str, value: Any) -> dict[str, Any]:
    """The amazon-ebs manifest with ``value`` at ``path`` (``builds.0.files``; ``-`` deletes)."""
    doc = copy.deepcopy(manifest(build(custom_data={"team": "images"})))
    *parents, last = path.split(".")
    target: Any = doc
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    key: Any = int(last) if isinstance(target, list) else last
    if value == "-":
        del target[key]
    else:
        target[key] = value
    return doc


MALFORMED: list[tuple[str, Any, str]] = [
    ("builds", "-", "builds"),
    ("builds", {"a": 1}, "builds"),
    ("builds", [], "builds"),
    ("builds.0", SECRET, "builds[0]"),
    ("builds.0.name", "-", "builds[0].name"),
    ("builds.0.name", 7, "builds[0].name"),
    ("builds.0.name", SECRET * 10, "builds[0].name"),
    ("builds.0.builder_type", None, "builds[0].builder_type"),
    ("builds.0.builder_type", "amazon\x00ebs", "builds[0].builder_type"),
    ("builds.0.build_time", "yesterday", "builds[0].build_time"),
    ("builds.0.build_time", True, "builds[0].build_time"),
    ("builds.0.build_time", -1, "builds[0].build_time"),
    ("builds.0.artifact_id", 12, "builds[0].artifact_id"),
    ("builds.0.artifact_id", SECRET, "builds[0].artifact_id"),
    ("builds.0.artifact_id", f"us-east-1:ami-1,{SECRET}", "builds[0].artifact_id"),
    ("builds.0.artifact_id", "US EAST:ami-1", "builds[0].artifact_id"),
    ("builds.0.artifact_id", "x" * (16 * 1024 + 1), "builds[0].artifact_id"),
    ("builds.0.artifact_id", "us-east-1:" + "a" * (MAX_EXTERNAL_ID + 1), "builds[0].artifact_id"),
    ("builds.0.packer_run_uuid", {"id": 1}, "builds[0].packer_run_uuid"),
    ("builds.0.packer_run_uuid", SECRET, "builds[0].packer_run_uuid"),
    ("last_run_uuid", 5, "last_run_uuid"),
    ("last_run_uuid", "11111111-2222-3333-4444-555555555555", "last_run_uuid"),
    ("builds.0.files", "disk.qcow2", "builds[0].files"),
    ("builds.0.files", [SECRET], "builds[0].files[0]"),
    ("builds.0.files", [{"size": 1}], "builds[0].files[0].name"),
    ("builds.0.files", [{"name": "a", "size": "big"}], "builds[0].files[0].size"),
    ("builds.0.files", [{"name": f"bad\n{SECRET}"}], "builds[0].files[0].name"),
    # Not printable for the service's ExternalId (answered as one line of text/plain): refused here, by name.
    ("builds.0.files", [{"name": "disk\u00a0.qcow2"}], "builds[0].files[0].name"),
    ("builds.0.files", [{"name": f"f{i}"} for i in range(MAX_FILES + 1)], "builds[0].files"),
    ("builds.0.custom_data", [SECRET], "builds[0].custom_data"),
    ("builds.0.custom_data", {f"has space {SECRET}": "v"}, "builds[0].custom_data"),
    ("builds.0.custom_data", {"team": 5}, "builds[0].custom_data.team"),
    ("builds.0.custom_data", {"team": SECRET * 30}, "builds[0].custom_data.team"),
    ("builds.0.custom_data", {f"k{i}": "v" for i in range(MAX_CUSTOM_DATA + 1)}, "builds[0].custom_data"),
    ("builds.0.custom_data", {"region": "East US"}, "builds[0].custom_data.region"),
]


@pytest.mark.parametrize(("path", "value", "field"), MALFORMED, ids=[f for _, _, f in MALFORMED])
def test_a_malformed_manifest_is_refused_naming_the_field_never_the_value(
    path: str, value: Any, field: str
) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(_with(path, value))
    assert caught.value.field == field
    assert str(caught.value) == f"{field}: {caught.value.reason}"
    for fragment in ("AKIA", "EXAMPLE", "has space", "East US", "yesterday", "big"):
        assert fragment not in caught.value.reason


@pytest.mark.parametrize(
    ("builder", "raw_id"),
    [
        ("azure-arm", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v"),
        ("azure-arm", "http://acct.blob.core.windows.net/c/disk.vhd"),
        ("oracle-oci", "ocid1.instance.oc1.iad.abc"),
        ("oracle-oci", "not-an-ocid"),
        ("amazon-ebs", "ami-0123abcd"),
        ("amazon-ebs", "us-east-1:"),
    ],
)
def test_a_known_builder_with_an_id_it_never_writes_is_refused(builder: str, raw_id: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(manifest(build(raw_id, builder_type=builder)))
    assert caught.value.field == "builds[0].artifact_id"


@pytest.mark.parametrize("doc", [None, [], "manifest", 3, True])
def test_a_manifest_that_is_no_object_is_refused(doc: object) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(doc)
    assert caught.value.field == "manifest"


def test_the_number_of_builds_is_bounded() -> None:
    doc = manifest(*[build() for _ in range(MAX_MANIFEST_BUILDS + 1)])
    with pytest.raises(ManifestError) as caught:
        parse_manifest(doc)
    assert caught.value.field == "builds"


def test_the_number_of_artifacts_is_bounded() -> None:
    def builds(count: int) -> list[dict[str, Any]]:
        """``count`` AMIs, a hundred regions to a build."""
        return [
            build(
                ",".join(f"r{n}:ami-{n:08x}" for n in range(start, min(start + 100, count))), name=f"b{start}"
            )
            for start in range(0, count, 100)
        ]

    with pytest.raises(ManifestError) as caught:
        parse_manifest(manifest(*builds(MAX_ARTIFACTS + 1)))
    assert caught.value.field == "builds"
    assert len(parse_manifest(manifest(*builds(MAX_ARTIFACTS)))) == MAX_ARTIFACTS


def test_an_old_runs_entry_is_not_read_beyond_its_run_id() -> None:
    """A broken entry of an earlier run does not stop the last run's builds from being recorded."""
    old = {"packer_run_uuid": OLD_RUN, "artifact_id": 42, "name": None}
    assert [a.external_id for a in parse_manifest(manifest(old, build()))] == ["ami-0123abcd"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)
BUILD_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "name": JSON | st.sampled_from(["a", "amazon-ebs.x"]),
        "builder_type": JSON
        | st.sampled_from(["amazon-ebs", "azure-arm", "oracle-oci", "vsphere-iso", "qemu"]),
        "artifact_id": JSON
        | st.sampled_from(["us-east-1:ami-1", "", "ocid1.image.oc1.iad.x", "/subscriptions/"]),
        "files": JSON,
        "custom_data": JSON,
        "build_time": JSON,
        "packer_run_uuid": st.sampled_from([RUN, OLD_RUN]) | JSON,
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    doc=st.one_of(
        JSON,
        st.fixed_dictionaries(
            {"builds": st.lists(BUILD_FIELDS | JSON, max_size=4)},
            optional={"last_run_uuid": st.sampled_from([RUN, OLD_RUN, ""]) | JSON},
        ),
    )
)
def test_any_json_gives_artifacts_or_a_manifest_error_and_nothing_else(doc: object) -> None:
    try:
        artifacts = parse_manifest(doc)
    except ManifestError as error:
        assert error.field
        assert error.reason
    else:
        assert 0 < len(artifacts) <= MAX_ARTIFACTS
        for artifact in artifacts:
            assert artifact.kind
            assert 0 < len(artifact.external_id) <= MAX_EXTERNAL_ID
            assert all(isinstance(v, str) for v in artifact.labels.values())
