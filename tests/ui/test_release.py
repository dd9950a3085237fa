"""Channels, revocation and ancestry on the dashboard: the channels page with heads and history, channel
and revoked badges on the matrix, a revoked build's banner and reason, the ancestry tree, and the revoke and
restore controls that only a session with the `release` scope is offered. Everything follows the feed live.

These builds live on their own platform ("hyperv"), each test in its own OS version, so the other browser
tests' views stay as seeded.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect
from ui_harness import ADMIN, VIEWER, Api, PageMaker, Seeded, run_to, screenshot, sign_in

pytestmark = pytest.mark.slow  # a real server and a real browser

MARKUP = '<img src=x onerror="window.__ran = 1">'


def family(api: Api, os_version: str) -> dict[str, dict[str, Any]]:
    """base-1 and a newer base-2 (the matrix's), hardened from base-1, app from hardened: all succeeded."""
    made: dict[str, dict[str, Any]] = {}
    for name, image_type, parents in (
        ("base-1", "base", []),
        ("base-2", "base", []),
        ("hardened", "hardened", ["base-1"]),
        ("app", "app", ["hardened"]),
    ):
        build = api.create(
            "hyperv", os_version, image_type, f"hv-{os_version}-{name}",
            parents=[made[p]["id"] for p in parents],
        )  # fmt: skip
        run_to(api, build, 100)
        made[name] = build
    return made


def assign(api: Api, channel: str, build: dict[str, Any], reason: str) -> Any:
    bucket = {k: build[k] for k in ("platform", "os_version", "image_type")}
    return api.call(
        "PUT", f"/channels/{channel}", {**bucket, "build": build["id"], "reason": reason}, expect=200
    )


def cell(page: Page, combo: str) -> Locator:
    return page.locator(f'td[data-combo="{combo}"]')


def test_the_channels_page_lists_heads_and_a_channels_history_and_follows_moves_live(
    make_page: PageMaker, admin_api: Api, seeded: Seeded
) -> None:
    builds = family(admin_api, "ch-1")
    assign(admin_api, "production", builds["base-1"], "passed the soak test")
    assign(admin_api, "staging", builds["base-2"], f"nightly {MARKUP}")

    matrix = make_page()
    sign_in(matrix, *VIEWER)
    badges = cell(matrix, "hyperv/ch-1/base").locator(".badge-channel")
    expect(badges).to_have_text(["Channel production", "Channel staging (this build)"])
    expect(cell(matrix, "hyperv/ch-1/base").locator(".badge-channel-current")).to_have_text(
        "Channel staging (this build)"
    )

    page = make_page()
    sign_in(page, *VIEWER)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Channels").click()
    expect(page.get_by_role("heading", name="Channels", level=1)).to_be_visible()
    production = page.locator('tr[data-channel="production@hyperv/ch-1/base"]')
    expect(production).to_contain_text("hyperv / ch-1 / base")
    expect(production.get_by_role("link", name="hv-ch-1-base-1")).to_be_visible()
    expect(production).to_contain_text("Succeeded")
    expect(page.locator('tr[data-channel="staging@hyperv/ch-1/base"]')).to_contain_text("hv-ch-1-base-2")
    screenshot(page, "channels")

    production.get_by_role("link", name="production").click()
    expect(page).to_have_url(
        re.compile(r"#/channels/production\?platform=hyperv&os_version=ch-1&image_type=base$")
    )
    expect(page.get_by_role("heading", level=1)).to_have_text("productionhyperv / ch-1 / base")
    expect(page.locator(".channel-head")).to_contain_text("hv-ch-1-base-1")
    rows = page.locator("table.history tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("none → hv-ch-1-base-1")
    expect(rows.first).to_contain_text("passed the soak test")
    expect(rows.first).to_contain_text(f"user:{ADMIN[0]}")

    # A move while the page is open: the head and the history follow without a reload.
    page.evaluate("window.__sameDocument = true")
    assign(admin_api, "production", builds["base-2"], "promoted after staging")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("hv-ch-1-base-1 → hv-ch-1-base-2")
    expect(rows.first).to_contain_text("promoted after staging")
    expect(page.locator(".channel-head")).to_contain_text("hv-ch-1-base-2")
    assert page.evaluate("window.__sameDocument === true")
    screenshot(page, "channel")
    # ...and on the matrix both channels now point at the build it shows.
    expect(cell(matrix, "hyperv/ch-1/base").locator(".badge-channel-current")).to_have_count(2)

    # The build page names the channels the build heads, each a link to its history.
    page.get_by_role("link", name="hv-ch-1-base-2").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("hv-ch-1-base-2")
    heads = page.get_by_role("region", name="Current state").locator(".badge-channel")
    expect(heads).to_have_text(["Channel production (this build)", "Channel staging (this build)"])

    page.goto("/ui/#/channels")
    expect(page.locator('tr[data-channel="staging@hyperv/ch-1/base"]')).to_contain_text("hv-ch-1-base-2")
    assert page.locator("main img[src=x]").count() == 0
    page.goto("/ui/#/channels/nothing-here?platform=hyperv&os_version=ch-1&image_type=base")
    expect(page.get_by_text('There is no channel "nothing-here" for hyperv / ch-1 / base.')).to_be_visible()


def test_a_revoked_build_says_so_and_why_everywhere_and_its_family_tree_shows_who_inherited_it(
    make_page: PageMaker, admin_api: Api, seeded: Seeded
) -> None:
    builds = family(admin_api, "rv-1")
    reason = f"CVE-2026-1234 in openssl {MARKUP}"
    admin_api.call("POST", f"/builds/{builds['base-1']['id']}/revoke", {"reason": reason}, expect=200)

    page = make_page()
    sign_in(page, *VIEWER, start=f"/ui/#/build/{builds['hardened']['id']}")
    banner = page.get_by_role("region", name="Revoked: do not deploy this build")
    expect(banner).to_contain_text(f"Reason: {reason}")
    expect(banner).to_contain_text("Inherited from hv-rv-1-base-1, which it was built from.")
    expect(banner.get_by_role("link", name="hv-rv-1-base-1")).to_have_attribute(
        "href", f"#/build/{builds['base-1']['id']}"
    )
    status = page.get_by_role("region", name="Current state").locator(".badge-revoked")
    expect(status).to_have_text("Revokedvia hv-rv-1-base-1")
    expect(status).to_have_attribute("title", reason)
    tree = page.get_by_role("region", name="Ancestry")
    built_from = tree.get_by_role("group", name="Built from")
    expect(built_from.locator(".tree-node")).to_have_count(1)
    expect(built_from.locator(".tree-node")).to_contain_text("hv-rv-1-base-1")
    expect(built_from.locator(".badge-revoked")).to_have_text("Revoked")
    built_on = tree.get_by_role("group", name="Built on it")
    expect(built_on.locator(".tree-node")).to_contain_text("hv-rv-1-app")
    expect(built_on.locator(".badge-revoked")).to_contain_text("via hv-rv-1-base-1")
    # A viewer is not offered the controls (the service would refuse them anyway).
    expect(page.get_by_role("region", name="Revocation")).to_have_count(0)
    expect(page.get_by_role("button", name="Revoke")).to_have_count(0)
    timeline = page.locator(".tl-revoked")
    expect(timeline).to_contain_text("Revoked with hv-rv-1-base-1, which it was built from")
    expect(timeline).to_contain_text(f"Why: {reason}")
    screenshot(page, "build-revoked")

    page.goto("/ui/")
    revoked = cell(page, "hyperv/rv-1/hardened").locator(".badge-revoked")
    expect(revoked).to_contain_text("Revoked")
    expect(revoked).to_have_attribute("title", reason)
    expect(cell(page, "hyperv/rv-1/base").locator(".badge-revoked")).to_have_count(0)  # base-2 is the newest
    for selector in ("img[src=x]",):
        assert page.locator(f"main {selector}").count() == 0
    assert page.evaluate("window.__ran") is None


def test_an_operator_revokes_and_restores_from_the_build_page_and_the_matrix_follows_live(
    make_page: PageMaker, admin_api: Api, seeded: Seeded
) -> None:
    builds = family(admin_api, "op-1")
    matrix = make_page()
    sign_in(matrix, *VIEWER)
    expect(cell(matrix, "hyperv/op-1/app")).to_contain_text("Succeeded")
    expect(cell(matrix, "hyperv/op-1/app").locator(".badge-revoked")).to_have_count(0)

    page = make_page()
    sign_in(page, *ADMIN, start=f"/ui/#/build/{builds['hardened']['id']}")
    controls = page.get_by_role("region", name="Revocation")
    expect(controls.get_by_role("heading", name="Revoke this build")).to_be_visible()
    controls.get_by_role("button", name="Revoke").click()
    expect(controls.get_by_role("alert")).to_contain_text("Say why")
    controls.get_by_label("Reason").fill("Broken sshd config")
    # Events that redraw the page while someone types (an artifact, a channel move) keep what they typed.
    admin_api.artifacts(
        builds["hardened"]["id"], {"region": "eu-west-1", "kind": "ami", "external_id": "ami-h"}
    )
    expect(page.locator(".tl-artifact")).to_contain_text("Recorded 1 artifact")
    assign(admin_api, "staging", builds["hardened"], "typing check")
    expect(page.get_by_role("region", name="Current state").locator(".badge-channel")).to_have_count(1)
    expect(controls.get_by_label("Reason")).to_have_value("Broken sshd config")
    controls.get_by_role("button", name="Revoke").click()
    banner = page.get_by_role("region", name="Revoked: do not deploy this build")
    expect(banner).to_contain_text("Reason: Broken sshd config")
    expect(banner.get_by_role("heading")).to_be_focused()  # where the form was, the keyboard goes on
    expect(banner).to_contain_text(f"By user:{ADMIN[0]}")
    # Its child inherited it: the viewer's matrix shows it without a reload.
    expect(cell(matrix, "hyperv/op-1/app").locator(".badge-revoked")).to_contain_text("via hv-op-1-hardened")
    expect(cell(matrix, "hyperv/op-1/hardened").locator(".badge-revoked")).to_have_attribute(
        "title", "Broken sshd config"
    )

    controls.get_by_label("Reason").fill("Config fixed upstream; the image was fine")
    controls.get_by_role("button", name="Restore").click()
    expect(banner).to_have_count(0)
    expect(controls.get_by_role("heading", name="Revoke this build")).to_be_visible()
    expect(page.locator(".tl-restored")).to_contain_text("Why: Config fixed upstream; the image was fine")
    expect(cell(matrix, "hyperv/op-1/app").locator(".badge-revoked")).to_have_count(0)
    expect(cell(matrix, "hyperv/op-1/hardened").locator(".badge-revoked")).to_have_count(0)

    # A revocation at a later time is scheduled, and the page says for when.
    page.goto(f"/ui/#/build/{builds['base-2']['id']}")
    controls.get_by_label("Reason").fill("Superseded on Monday")
    controls.get_by_label(re.compile("^At")).fill("2099-06-01T09:30:00")
    controls.get_by_role("button", name="Revoke").click()
    expect(controls.locator(".notice")).to_contain_text("A revocation is scheduled for")
    expect(controls.locator(".notice")).to_contain_text("2099")
    expect(controls.locator(".notice")).to_contain_text("Superseded on Monday")
    expect(page.get_by_role("region", name="Revoked: do not deploy this build")).to_have_count(0)

    # A refusal is shown in the service's words (here: the answer of a service that refuses it).
    problem = {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "the build is <b>busy</b>",
    }
    page.route(
        re.compile(r"/builds/[^/]+/revoke$"),
        lambda route: route.fulfill(status=409, json=problem, content_type="application/problem+json"),
    )
    page.goto(f"/ui/#/build/{builds['app']['id']}")
    controls.get_by_label("Reason").fill("try")
    controls.get_by_role("button", name="Revoke").click()
    expect(controls.get_by_role("alert")).to_have_text("the build is <b>busy</b>")
    page.unroute(re.compile(r"/builds/[^/]+/revoke$"))

    # An inherited revocation is lifted by restoring the ancestor: the page says which one.
    admin_api.call("POST", f"/builds/{builds['base-1']['id']}/revoke", {"reason": "bad base"}, expect=200)
    page.goto(f"/ui/#/build/{builds['app']['id']}")
    expect(page.get_by_role("region", name="Revocation")).to_contain_text(
        "This build is revoked because hv-op-1-base-1 is; restoring that build lifts it."
    )


def test_channels_ancestry_artifacts_and_the_controls_fit_a_phone(
    make_page: PageMaker, admin_api: Api, seeded: Seeded
) -> None:
    builds = family(admin_api, "ph-1")
    assign(admin_api, "production", builds["hardened"], "phone check")
    admin_api.artifacts(
        builds["hardened"]["id"],
        {
            "region": "eu-west-1",
            "kind": "ami",
            "external_id": "ami-0" + "a" * 60,
            "labels": {"arch": "x86_64"},
        },
    )
    admin_api.call(
        "POST", f"/builds/{builds['base-1']['id']}/revoke", {"reason": "CVE-" + "9" * 300}, expect=200
    )
    phone = make_page(390, 844, dark=True)
    overflow = "document.documentElement.scrollWidth - window.innerWidth"
    sign_in(phone, *ADMIN, start=f"/ui/#/build/{builds['hardened']['id']}")
    expect(phone.get_by_role("region", name="Ancestry").locator(".tree-node").first).to_be_visible()
    expect(phone.locator(".external-id")).to_be_visible()
    assert phone.evaluate(overflow) <= 0, "no sideways scrolling on a phone"
    screenshot(phone, "build-release-phone-dark")
    phone.goto(f"/ui/#/build/{builds['base-2']['id']}")
    expect(
        phone.get_by_role("region", name="Revocation").get_by_role("button", name="Revoke")
    ).to_be_visible()
    assert phone.evaluate(overflow) <= 0
    phone.goto("/ui/#/channels")
    expect(phone.locator("table.channels tbody tr").first).to_be_visible()
    assert phone.evaluate(overflow) <= 0
    phone.get_by_role("link", name="production").first.click()
    expect(phone.locator("table.history tbody tr").first).to_be_visible()
    assert phone.evaluate(overflow) <= 0
    screenshot(phone, "channel-phone-dark")
