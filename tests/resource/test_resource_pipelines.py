"""The example pipelines parse, use only what they declare, and give our resource valid config.

``source`` and ``put`` params are checked by the resource's own validation code (``parse_source``
and ``plan_put``), so an example can never show a key or a shape that the resource rejects.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from buildstate_resource.config import GET_PARAMS_KEYS, parse_source, reject_unknown_keys
from buildstate_resource.put import plan_put

PIPELINES_DIR = Path(__file__).resolve().parents[2] / "pipelines"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures/packer"
VARS_FILE = PIPELINES_DIR / "vars.yml"
PIPELINES = sorted(path for path in PIPELINES_DIR.glob("*.yml") if path != VARS_FILE)
# Secrets come from the credential manager, never from the vars file.
CREDENTIAL_VARS = {"buildstate_api_key", "buildstate_release_key", "notify_webhook_url"}
# Resource types that ship with Concourse, so pipelines use them without declaring them.
CORE_TYPES = {"git", "registry-image", "time", "s3", "semver", "docker-image"}
STEP_HOOKS = ("on_success", "on_failure", "on_abort", "on_error", "ensure")
VAR = re.compile(r"\(\(([a-zA-Z0-9_.-]+)\)\)")


def _vars() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(VARS_FILE.read_text())
    return loaded


def _interpolate(value: Any, used: set[str]) -> Any:
    """Replace ``((var))`` as ``fly set-pipeline -l vars.yml`` would (secrets get a stand-in)."""
    if isinstance(value, dict):
        return {key: _interpolate(item, used) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, used) for item in value]
    if not isinstance(value, str):
        return value
    names = VAR.findall(value)
    used.update(names)
    known = {**_vars(), **{name: f"stand-in-{name}" for name in CREDENTIAL_VARS}}
    whole = VAR.fullmatch(value)
    if whole and whole.group(1) in known:
        return known[whole.group(1)]
    return VAR.sub(lambda match: str(known.get(match.group(1), match.group(0))), value)


def load_pipeline(path: Path) -> tuple[dict[str, Any], set[str]]:
    used: set[str] = set()
    pipeline = _interpolate(yaml.safe_load(path.read_text()), used)
    assert isinstance(pipeline, dict), f"{path.name} is not a mapping"
    return pipeline, used


def steps(step: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A step and every step nested in it (do, in_parallel, try, hooks)."""
    yield step
    nested: list[Any] = []
    if "do" in step:
        nested.extend(step["do"])
    if "in_parallel" in step:
        parallel = step["in_parallel"]
        nested.extend(parallel["steps"] if isinstance(parallel, dict) else parallel)
    if "try" in step:
        nested.append(step["try"])
    nested.extend(step[hook] for hook in STEP_HOOKS if hook in step)
    for child in nested:
        yield from steps(child)


def all_steps(pipeline: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for job in pipeline["jobs"]:
        for step in job["plan"]:
            for found in steps(step):
                yield job["name"], found
        for hook in STEP_HOOKS:
            if hook in job:
                for found in steps(job[hook]):
                    yield job["name"], found


def buildstate_resources(pipeline: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        resource["name"]: resource for resource in pipeline["resources"] if resource["type"] == "buildstate"
    }


def test_there_are_example_pipelines() -> None:
    assert {path.name for path in PIPELINES} >= {
        "build-image.yml", "publish.yml", "notify.yml", "deploy.yml", "promote.yml"
    }  # fmt: skip


@pytest.mark.parametrize("path", PIPELINES, ids=lambda path: path.name)
def test_pipeline_declares_the_buildstate_resource_type(path: Path) -> None:
    pipeline, _used = load_pipeline(path)

    declared = {resource_type["name"]: resource_type for resource_type in pipeline["resource_types"]}
    assert declared["buildstate"]["type"] == "registry-image"
    assert declared["buildstate"]["source"]["repository"] == _vars()["buildstate_resource_image"]
    assert buildstate_resources(pipeline), "each example uses the resource"


@pytest.mark.parametrize("path", PIPELINES, ids=lambda path: path.name)
def test_every_var_comes_from_the_vars_file_or_the_credential_manager(path: Path) -> None:
    _pipeline, used = load_pipeline(path)

    assert used - set(_vars()) - CREDENTIAL_VARS == set()
    assert not set(_vars()) & CREDENTIAL_VARS, "secrets never go in the vars file"


@pytest.mark.parametrize("path", PIPELINES, ids=lambda path: path.name)
def test_steps_use_only_declared_resources_and_types(path: Path) -> None:
    pipeline, _used = load_pipeline(path)
    declared_types = {resource_type["name"] for resource_type in pipeline.get("resource_types", [])}
    resources = {resource["name"] for resource in pipeline["resources"]}

    for resource in pipeline["resources"]:
        assert resource["type"] in declared_types | CORE_TYPES, resource["name"]
    for job, step in all_steps(pipeline):
        for kind in ("get", "put"):
            if kind in step:
                assert step.get("resource", step[kind]) in resources, f"{job}: {kind} {step[kind]}"


@pytest.mark.parametrize("path", PIPELINES, ids=lambda path: path.name)
def test_buildstate_sources_are_accepted_by_the_resource(path: Path) -> None:
    pipeline, _used = load_pipeline(path)

    for resource in buildstate_resources(pipeline).values():
        parse_source(resource["source"])


@pytest.mark.parametrize("path", PIPELINES, ids=lambda path: path.name)
def test_buildstate_steps_have_valid_params(path: Path, tmp_path: Path) -> None:
    pipeline, _used = load_pipeline(path)
    ours = buildstate_resources(pipeline)

    for job, step in all_steps(pipeline):
        if "get" in step and step.get("resource", step["get"]) in ours:
            reject_unknown_keys(step.get("params") or {}, GET_PARAMS_KEYS, f"{job}: get params")
        if "put" not in step or step.get("resource", step["put"]) not in ours:
            continue
        channel = parse_source(ours[step.get("resource", step["put"])]["source"]).channel
        reject_unknown_keys(step.get("get_params") or {}, GET_PARAMS_KEYS, f"{job}: get_params")
        sources = tmp_path / f"put-{id(step)}"
        for key, relative in _files_named_in(step["params"]):
            artifact = Path(relative).parts[0]
            if isinstance(step.get("inputs"), list):
                assert artifact in step["inputs"], f"{job}: {relative} is not among the put's inputs"
            (sources / relative).parent.mkdir(parents=True, exist_ok=True)
            (sources / relative).write_text(_stand_in(key, relative))
        plan_put(step["params"], sources, channel)


def _stand_in(key: str, relative: str) -> str:
    """What a step before the put would have written to ``relative``."""
    if key == "artifacts_file":  # a Packer manifest (tests/fixtures/packer has one per builder)
        return (FIXTURES / "amazon-ebs.json").read_text()
    return "{}" if relative.endswith(".json") else "stand-in"


def _files_named_in(params: Any) -> Iterator[tuple[str, str]]:
    if isinstance(params, dict):
        for key, value in params.items():
            if key.endswith("_file") and isinstance(value, str):
                yield key, value
            else:
                yield from _files_named_in(value)


def _puts(pipeline: dict[str, Any]) -> list[dict[str, Any]]:
    ours = buildstate_resources(pipeline)
    return [step for _job, step in all_steps(pipeline) if step.get("put") in ours]


def test_image_pipeline_records_every_stage_and_each_failing_step() -> None:
    pipeline, _used = load_pipeline(PIPELINES_DIR / "build-image.yml")
    puts = _puts(pipeline)

    assert sum("create" in put["params"] for put in puts) == 1
    assert [put["params"]["state"] for put in puts if "state" in put["params"]] == [10, 25, 50, 75, 100]
    failing_tasks = {
        step["task"]: step["on_failure"]["params"]["failure"]["component"]
        for _job, step in all_steps(pipeline)
        if "task" in step and "on_failure" in step
    }
    assert failing_tasks == {"packer-build": "packer", "ansible-configure": "ansible"}


@pytest.mark.parametrize(("name", "states"), [("publish.yml", [100]), ("notify.yml", ["failed"])])
def test_downstream_pipelines_trigger_on_every_matching_event(name: str, states: list[Any]) -> None:
    pipeline, _used = load_pipeline(PIPELINES_DIR / name)
    (resource,) = buildstate_resources(pipeline).values()

    assert resource["source"]["states"] == states
    triggers = [
        step
        for _job, step in all_steps(pipeline)
        if step.get("get") == resource["name"] and step.get("trigger") is True
    ]
    assert triggers
    assert all(step.get("version") == "every" for step in triggers)


def _plan(pipeline: dict[str, Any], job_name: str) -> list[dict[str, Any]]:
    (job,) = [job for job in pipeline["jobs"] if job["name"] == job_name]
    return [found for step in job["plan"] for found in steps(step)]


def test_image_pipeline_records_the_packer_manifest_of_the_packer_task() -> None:
    pipeline, _used = load_pipeline(PIPELINES_DIR / "build-image.yml")
    plan = _plan(pipeline, "build-image")
    (packer,) = [index for index, step in enumerate(plan) if step.get("task") == "packer-build"]
    outputs = {output["name"] for output in plan[packer]["config"]["outputs"]}
    recording = [
        (index, step)
        for index, step in enumerate(plan)
        if step.get("put") == "build-state" and "artifacts_file" in step["params"]
    ]

    assert len(recording) == 1, "one put records the manifest"
    index, put = recording[0]
    manifest_dir = Path(put["params"]["artifacts_file"]).parts[0]
    assert index > packer, "after the Packer task"
    assert manifest_dir in outputs and manifest_dir in put["inputs"]
    assert "packer-manifest.json" in plan[packer]["config"]["run"]["args"][-1]
    assert put["params"]["state"] < 100, "recorded before the build succeeds, so a deployer finds it"


def test_deploy_pipeline_reads_the_ami_from_the_get_and_from_the_lookup() -> None:
    pipeline, used = load_pipeline(PIPELINES_DIR / "deploy.yml")
    (resource,) = buildstate_resources(pipeline).values()
    triggered = _plan(pipeline, "deploy-new-image")
    looked_up = _plan(pipeline, "deploy-current-image")

    assert resource["source"]["states"] == [100]
    assert any(step.get("get") == resource["name"] and step.get("trigger") is True for step in triggered)
    scripts = {
        step["task"]: step["config"]["run"]["args"][-1] for step in triggered + looked_up if "task" in step
    }
    assert f"{resource['name']}/artifact_id" in scripts["read-ami"]
    assert "/artifacts/latest" in scripts["look-up-ami"]
    assert "Accept: text/plain" in scripts["look-up-ami"]
    assert "X-API-Key: ${BUILDSTATE_API_KEY}" in scripts["look-up-ami"]
    (lookup,) = [step for step in looked_up if step.get("task") == "look-up-ami"]
    assert lookup["config"]["params"]["BUILDSTATE_API_KEY"] == "stand-in-buildstate_api_key"
    assert "buildstate_api_key" in used, "the key comes from the credential manager"


def _triggers(plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [step for step in plan if "get" in step and step.get("trigger") is True]


def test_promote_pipeline_tests_then_assigns_staging_then_production_by_hand() -> None:
    pipeline, used = load_pipeline(PIPELINES_DIR / "promote.yml")
    ours = buildstate_resources(pipeline)
    sources = {name: parse_source(resource["source"]) for name, resource in ours.items()}
    bucket = sources["finished-builds"].bucket()
    tested, promoted = _plan(pipeline, "test-image"), _plan(pipeline, "promote-to-production")

    assert sources["finished-builds"].states == ("100",)
    assert (sources["staging"].channel, sources["production"].channel) == ("staging", "production")
    assert sources["staging"].bucket() == sources["production"].bucket() == bucket and len(bucket) == 3
    # build (state 100) -> test -> staging: triggered by each finished build, the test before the put.
    (trigger,) = _triggers(tested)
    assert (trigger["get"], trigger.get("version")) == ("finished-builds", "every")
    kinds = [next(kind for kind in ("get", "task", "put") if kind in step) for step in tested]
    assert kinds == ["get", "task", "put"]
    assert tested[-1]["put"] == "staging"
    assert tested[-1]["params"]["build_file"] == "finished-builds/build_id"
    # staging -> production: by hand, for what staging points at after the test job.
    assert _triggers(promoted) == [], "a manual job: nothing triggers it"
    assert promoted[0] == {"get": "staging", "passed": ["test-image"]}
    assert promoted[-1]["put"] == "production"
    assert promoted[-1]["params"]["build_file"] == "staging/build_id"
    assert all("reason" in step["params"]["assign_channel"] for step in (tested[-1], promoted[-1]))
    # Moving channels takes the release key; the others read with the pipelines' key.
    assert {name for name, resource in ours.items() if "release" in resource["source"]["api_key"]} == {
        "staging", "production"
    }  # fmt: skip
    assert "buildstate_release_key" in used


def test_promote_pipeline_rolls_out_each_move_of_production() -> None:
    pipeline, _used = load_pipeline(PIPELINES_DIR / "promote.yml")
    plan = _plan(pipeline, "roll-out-production")

    (trigger,) = _triggers(plan)
    assert trigger == {"get": "production", "trigger": True}, "the newest move only: no version: every"
    (task,) = [step for step in plan if "task" in step]
    assert "production/artifacts.json" in task["config"]["run"]["args"][-1]


def test_promote_pipeline_withdraws_each_revoked_image() -> None:
    pipeline, _used = load_pipeline(PIPELINES_DIR / "promote.yml")
    (revocations,) = [
        name for name, resource in buildstate_resources(pipeline).items()
        if resource["source"].get("states") == ["revoked"]
    ]  # fmt: skip
    plan = _plan(pipeline, "withdraw-revoked-image")

    (trigger,) = _triggers(plan)
    assert (trigger["get"], trigger.get("version")) == (revocations, "every"), "every revoked build, once"
    (task,) = [step for step in plan if "task" in step]
    script = task["config"]["run"]["args"][-1]
    assert f"{revocations}/artifacts.json" in script and "aws ec2 disable-image" in script
    assert [item["name"] for item in task["config"]["inputs"]] == [revocations]
