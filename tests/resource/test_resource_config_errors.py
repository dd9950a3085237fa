"""Bad configuration fails in one line that says what to fix, before any request is sent."""

from __future__ import annotations

from pathlib import Path

import pytest
import resource_harness as harness
from resource_fake_server import FakeServer

from buildstate_resource.config import CREATE_KEYS, PUT_PARAMS_KEYS, SOURCE_KEYS


def test_unknown_source_key_is_named_and_allowed_keys_listed(fake_server: FakeServer) -> None:
    run = harness.check({"url": fake_server.url, "plaform": "aws"})

    error = run.error()
    assert "'plaform'" in error
    assert "did you mean 'platform'?" in error
    assert "allowed keys: " + ", ".join(sorted(SOURCE_KEYS)) in error
    assert fake_server.requests == []


@pytest.mark.parametrize("script", ["check", "in", "out"])
def test_null_source_is_a_clear_error_for_every_script(script: str, tmp_path: Path) -> None:
    request = {"source": None, "version": {"seq": "1"}}
    run = harness.run_script(script, request, [str(tmp_path)], harness.build_env())

    assert "source is empty" in run.error()
    assert "url" in run.error()


def test_missing_url_is_a_clear_error() -> None:
    assert "source.url is required" in harness.check({"platform": "aws"}).error()


BUCKET = {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base"}


@pytest.mark.parametrize(
    ("source_extra", "expected"),
    [
        ({"states": [100, "broken"]}, "source.states entries must be"),
        ({"states": [42]}, "source.states entries must be"),
        ({"event_types": ["finished"]}, "source.event_types entries must be one of"),
        ({"platform": 8}, "source.platform must be a non-empty string"),
        ({"timeout": "soon"}, "source.timeout must be a number"),
        ({"debug": "yes"}, "source.debug must be true or false"),
        ({"ca_certs": ["not a pem"]}, "source.ca_certs must be a list of PEM certificates"),
        (
            {"channel": "production", "platform": "aws"},
            "needs source.os_version, source.image_type: a channel",
        ),
        ({"channel": "Production", **BUCKET}, "source.channel must be a channel name"),
        ({"channel": "production", "states": ["revoked"], **BUCKET}, "drop source.states (a resource with"),
        ({"channel": "production", "build_id": "b-1", **BUCKET}, "drop source.build_id"),
    ],
)
def test_invalid_source_values_are_rejected(
    fake_server: FakeServer, source_extra: dict[str, object], expected: str
) -> None:
    run = harness.check({"url": fake_server.url, **source_extra})

    assert expected in run.error()
    assert fake_server.requests == []


def test_url_must_be_http_or_https() -> None:
    assert "must be an http:// or https:// URL" in harness.check({"url": "ftp://x"}).error()


def test_unknown_put_param_is_named_with_the_allowed_keys(fake_server: FakeServer, tmp_path: Path) -> None:
    run = harness.put({"url": fake_server.url}, {"build": "b-1", "stat": 50}, tmp_path)

    error = run.error()
    assert "'stat'" in error
    assert "did you mean 'state'?" in error
    assert ", ".join(sorted(PUT_PARAMS_KEYS)) in error
    assert fake_server.requests == []


def test_unknown_create_key_lists_the_create_keys(fake_server: FakeServer, tmp_path: Path) -> None:
    params = {"create": {"platform": "aws", "os": "rhel", "image_type": "base", "build_id": "b"}}
    error = harness.put({"url": fake_server.url}, params, tmp_path).error()

    assert "'os' in params.create" in error
    assert ", ".join(sorted(CREATE_KEYS)) in error


def test_get_takes_no_params(fake_server: FakeServer, tmp_path: Path) -> None:
    run = harness.get({"url": fake_server.url}, {"seq": "1"}, tmp_path, {"depth": 1})

    assert "unknown key 'depth' in params; allowed keys: none" in run.error()


AMI = {"region": "eu-west-1", "kind": "ami", "external_id": "ami-0123abcd"}
CREATE = {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base", "build_id": "b-1"}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            harness.OMIT,
            "exactly one of create, state, failure, reset, or artifacts / artifacts_file or assign_channel "
            "alone",
        ),
        ({"build": "b", "state": 50, "reset": {"reason": "x"}}, "(given: state, reset)"),
        ({"state": 50}, "exactly one of build (a build id) and build_file"),
        ({"build": "b", "state": 42}, "params.state must be a state code 0..100 in steps of 5"),
        ({"build": "b", "state": 50, "message": "m", "message_file": "f"}, "not both"),
        ({"build": "b", "failure": {"component": "packer"}}, "needs error_message"),
        ({"build": "b", "reset": {"reason": "x"}, "message": "m"}, "go with params.state only"),
        ({"build_file": "../etc/passwd", "state": 50}, "must be a path under the put's inputs"),
        ({"build_file": "state/build_id", "state": 50}, "is 'state' an output of an earlier step"),
        ({"build": "b", "artifacts": []}, "params.artifacts must be a non-empty list"),
        ({"build": "b", "artifacts": {"kind": "ami"}}, "params.artifacts must be a non-empty list"),
        ({"build": "b", "artifacts": [{"kind": "ami"}]}, "params.artifacts[0].external_id is required"),
        ({"build": "b", "artifacts": [AMI, {**AMI, "regoin": "x"}]}, "'regoin' in params.artifacts[1] (did"),
        (
            {"build": "b", "artifacts": [{**AMI, "labels": {"n": 1}}]},
            "params.artifacts[0].labels.n must be a",
        ),
        (
            {"build": "b", "artifacts": [{**AMI, "region": 5}]},
            "params.artifacts[0].region must be a non-empty",
        ),
        ({"build": "b", "artifacts": [AMI] * 201}, "lists 201 artifacts; one put records at most 200"),
        (
            {"build": "b", "artifacts": [AMI], "artifacts_file": "f.json"},
            "artifacts or artifacts_file, not both",
        ),
        ({"artifacts": [AMI]}, "exactly one of build (a build id) and build_file"),
        ({"build": "b", "artifacts": [AMI], "reset": {"reason": "x"}}, "not with reset"),
        ({"create": CREATE, "artifacts": [AMI]}, "not with create"),
        (
            {"build": "b", "artifacts_file": "packer/manifest.json"},
            "is 'packer' an output of an earlier step",
        ),
        ({"build": "b", "artifacts_file": "/etc/passwd"}, "must be a path under the put's inputs"),
        ({"build": "b", "artifacts_file": "packer/a\x00b.json"}, "must be a path under the put's inputs"),
        (
            {"build": "b", "assign_channel": {"reason": "ok"}},
            "params.assign_channel needs name (or a resource",
        ),
        (
            {"build": "b", "assign_channel": {"name": "prod"}},
            "params.assign_channel needs reason or reason_file",
        ),
        (
            {"build": "b", "assign_channel": {"name": "Prod!", "reason": "r"}},
            "must be a channel name: 1 to 64",
        ),
        ({"build": "b", "assign_channel": {"name": "p", "reson": "r"}}, "(did you mean 'reason'?)"),
        ({"build": "b", "assign_channel": "prod"}, "params.assign_channel must be a mapping"),
        (
            {"assign_channel": {"name": "p", "reason": "r"}},
            "exactly one of build (a build id) and build_file",
        ),
        ({"create": CREATE, "assign_channel": {"name": "p", "reason": "r"}}, "not with create"),
        (
            {"build": "b", "failure": {"error_message": "x"}, "assign_channel": {"name": "p", "reason": "r"}},
            "params.assign_channel goes with state (a build is assigned once it succeeded), or alone",
        ),
    ],
)
def test_put_params_are_validated_before_any_request(
    fake_server: FakeServer, tmp_path: Path, params: object, expected: str
) -> None:
    run = harness.put({"url": fake_server.url}, params, tmp_path)

    assert expected in run.error()
    assert fake_server.requests == []


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"build": "b", "state": 100}, "a put to a channel resource (source.channel: staging) moves the"),
        ({"build": "b", "assign_channel": {"name": "production", "reason": "r"}}, "is not this resource's"),
    ],
)
def test_a_put_to_a_channel_resource_moves_that_channel(
    fake_server: FakeServer, tmp_path: Path, params: object, expected: str
) -> None:
    run = harness.put({"url": fake_server.url, "channel": "staging", **BUCKET}, params, tmp_path)

    assert expected in run.error()
    assert fake_server.requests == []


SECRET_IN_FILE = "custom-data-secret-hunter2"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (f'{{"builds": [{{"custom_data": {{"token": "{SECRET_IN_FILE}"', "is not JSON (line 1, column"),
        (b'["\xc3\x28"]', "is not UTF-8 JSON"),
        ('{"builds": [], "last_run_uuid": ""}', "is a Packer manifest without builds"),
        ('{"builds": {"a": 1}}', "is a Packer manifest without builds"),
        ('{"artifacts": [], "extra": 1}', "unknown key 'extra'"),
        ('{"artifacts": []}', "must be a non-empty list"),
        (f'"{SECRET_IN_FILE}"', "is neither a Packer manifest"),
        ('[{"kind": "ami", "external_id": "ami-1", "lables": {}}]', "(did you mean 'labels'?)"),
        (" " * (4 << 20) + "[]", "holds 4194306 bytes; at most 4194304 are read"),
        ("[" * 100_000 + "]" * 100_000, "is nested too deeply"),
    ],
)
def test_an_artifacts_file_is_read_before_any_request_and_never_echoed(
    fake_server: FakeServer, tmp_path: Path, content: str | bytes, expected: str
) -> None:
    (tmp_path / "packer").mkdir()
    manifest = tmp_path / "packer" / "manifest.json"
    if isinstance(content, bytes):
        manifest.write_bytes(content)
    else:
        manifest.write_text(content)
    params = {"build": "b", "state": 25, "artifacts_file": "packer/manifest.json"}

    run = harness.put({"url": fake_server.url}, params, tmp_path)

    error = run.error()
    assert "params.artifacts_file 'packer/manifest.json'" in error
    assert expected in error
    assert SECRET_IN_FILE not in run.stderr
    assert fake_server.requests == []


def test_in_and_out_need_their_directory_argument(fake_server: FakeServer) -> None:
    request = {"source": {"url": fake_server.url}, "version": {"seq": "1"}}
    run_in = harness.run_script("in", request, [], harness.build_env())
    run_out = harness.run_script("out", request, [], harness.build_env())

    assert "destination directory" in run_in.error()
    assert "sources directory" in run_out.error()


def test_stdin_that_is_not_json_fails_in_one_line() -> None:
    run = harness.run_raw("check", "source: {url: x}", [], {})

    assert "request on stdin is not valid JSON" in run.error()


def test_in_rejects_a_version_without_seq(fake_server: FakeServer, tmp_path: Path) -> None:
    run = harness.get({"url": fake_server.url}, {"build": "b-1"}, tmp_path)

    assert "has no usable 'seq'" in run.error()


URL_PASSWORD = "hunter2-in-the-url"


@pytest.mark.parametrize(
    "url",
    [
        f"http://ci:{URL_PASSWORD}@127.0.0.1:9",
        "http://ci:hunter2%2Din%2Dthe%2Durl@127.0.0.1:9",  # percent-encoded: the same password
        f"ftp://ci:{URL_PASSWORD}@127.0.0.1:9",
        f"http://ci:{URL_PASSWORD}@[::1",  # not even a URL
        f"http://{URL_PASSWORD}@127.0.0.1:9",  # a token as the user part, no colon
        f"http://127.0.0.1:9/?password={URL_PASSWORD}",  # was sent, and printed on every retry
        f"http://127.0.0.1:9/?a=b&token={URL_PASSWORD}#x",
        f"http://127.0.0.1:9/#{URL_PASSWORD}",
    ],
)
@pytest.mark.parametrize("script", ["check", "in", "out"])
def test_a_password_in_source_url_is_refused_and_never_shown(script: str, url: str, tmp_path: Path) -> None:
    """credentials in source.url cannot work (urllib would look the whole user:password@host up as a
    name); the error says so with the password redacted, even in debug, and nothing is sent."""
    request = {"source": {"url": url, "debug": True}, "version": {"seq": "1"}, "params": {"build": "b"}}
    run = harness.run_script(script, request, [str(tmp_path)], harness.build_env())
    error = run.error()
    assert "source.url" in error
    for spelled in (URL_PASSWORD, "hunter2%2Din%2Dthe%2Durl"):
        assert spelled not in run.stderr + run.stdout
    if url.startswith("http://ci:") and not url.endswith("[::1"):
        assert "may not hold a user or password" in error
    if "?" in url or "#" in url:
        assert "without a query or fragment" in error
    if not url.endswith("[::1") and not url.startswith("ftp:"):
        assert "source.api_key" in error
