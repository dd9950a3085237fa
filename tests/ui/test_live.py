"""Live updates: changes posted through the API while a page is open show up without a reload.

These builds live on their own platform ("gcp"), so the other browser tests' counts stay as seeded.
"""

from __future__ import annotations

import itertools
import re

import pytest
from playwright.sync_api import Page, Route, expect
from ui_harness import VIEWER, Api, PageMaker, Seeded, screenshot, sign_in

pytestmark = pytest.mark.slow  # a real server and a real browser

_numbers = itertools.count(1)


def new_build(api: Api, os_version: str, image_type: str = "base", code: int = 25) -> dict[str, object]:
    build = api.create("gcp", os_version, image_type, f"gcp-{os_version}-{image_type}-{next(_numbers)}")
    for step in (10, 25, 50, 75):
        if step <= code:
            api.state(str(build["id"]), step, f"reached {step}")
    result: dict[str, object] = build
    return result


def mark_page(page: Page) -> None:
    """Leave a mark in the page's memory: if it is still there later, the page never reloaded."""
    page.evaluate("window.__sameDocument = true")


def same_document(page: Page) -> bool:
    return bool(page.evaluate("window.__sameDocument === true"))


def test_a_state_change_and_a_failure_arrive_live_on_the_matrix(
    page: Page, admin_api: Api, seeded: Seeded
) -> None:
    build = new_build(admin_api, "debian-12")
    ref = str(build["id"])
    sign_in(page, *VIEWER)
    live_cell = page.locator('td[data-combo="gcp/debian-12/base"]')
    expect(live_cell).to_contain_text("25%")
    expect(page.locator("#live-status")).to_have_text("Live")  # the stream, not the polling fallback
    mark_page(page)

    admin_api.state(ref, 50, "Starting Ansible configuration")
    expect(live_cell).to_contain_text("50%")
    expect(live_cell.locator("progress")).to_have_attribute("value", "50")
    expect(live_cell).to_contain_text("Starting Ansible configuration")
    expect(page.locator("#announcer")).to_have_text("gcp / debian-12 / base moved to 50")
    expect(page.locator(".activity-item").first).to_contain_text("moved to 50")

    admin_api.fail(ref, "Image scan found 3 critical CVEs", "IMAGE_SCAN_FAILED", "trivy")
    badge = live_cell.locator(".badge-failure")
    expect(badge).to_contain_text("IMAGE_SCAN_FAILED")
    expect(badge).to_contain_text("trivy")
    expect(live_cell).to_have_attribute("data-status", "failed")
    expect(page.locator("#announcer")).to_have_text(
        "gcp / debian-12 / base failed at 50: IMAGE_SCAN_FAILED in trivy"
    )
    # A combination nobody had built before gets its cell as soon as the build is registered.
    new_build(admin_api, "debian-12", "gpu", code=0)
    expect(page.locator('td[data-combo="gcp/debian-12/gpu"]')).to_contain_text("0%")
    # The status counts catch up by re-reading the summary shortly after a burst of events.
    expect(page.locator(".count-failed .count-value")).to_have_text(
        str(seeded_failed_count(admin_api)), timeout=10_000
    )
    assert same_document(page), "the page must not have reloaded"
    screenshot(page, "matrix-live")


def seeded_failed_count(api: Api) -> int:
    count: int = api.call("GET", "/dashboard/summary", expect=200)["counts"]["failed"]
    return count


def test_the_build_page_follows_its_build_live(page: Page, admin_api: Api, seeded: Seeded) -> None:
    build = new_build(admin_api, "rocky-9")
    ref = str(build["id"])
    sign_in(page, *VIEWER, start=f"/ui/#/build/{ref}")
    expect(page.get_by_role("heading", level=1)).to_have_text(str(build["build_id"]))
    expect(page.locator(".tl-item")).to_have_count(3)
    mark_page(page)

    admin_api.state(ref, 75, "Ansible configuration completed")
    expect(page.locator(".tl-item")).to_have_count(4)
    expect(page.locator(".tl-item").last).to_contain_text("25 → 75")
    expect(page.locator(".tl-item").last).to_contain_text("Ansible configuration completed")
    expect(page.locator(".big-code")).to_contain_text("75")
    expect(page.locator("table.steps")).to_contain_text("25 → 75")

    admin_api.fail(ref, "Disk full", "DISK_FULL", "packer")
    admin_api.reset(ref, "Bigger disk configured")
    expect(page.get_by_role("region", name=re.compile(r"^Attempt 2"))).to_contain_text(
        "Bigger disk configured"
    )
    expect(page.get_by_role("region", name=re.compile(r"^Attempt 1")).locator(".tl-failure")).to_contain_text(
        "DISK_FULL"
    )
    expect(page.locator(".big-code")).to_contain_text("0")
    assert same_document(page)


def test_a_new_failure_joins_its_group_live(page: Page, admin_api: Api, seeded: Seeded) -> None:
    first = new_build(admin_api, "sles-15")
    admin_api.fail(str(first["id"]), "Registration server unreachable", "SCC_UNREACHABLE", "zypper")
    sign_in(page, *VIEWER, start="/ui/#/failures?platform=gcp")
    group = page.locator("table.groups tbody tr", has_text="SCC_UNREACHABLE")
    expect(group.locator(".group-count")).to_have_text("1")
    mark_page(page)

    second = new_build(admin_api, "sles-15", "cis-hardened")
    admin_api.fail(str(second["id"]), "Registration server unreachable", "SCC_UNREACHABLE", "zypper")
    expect(group.locator(".group-count")).to_have_text("2")
    expect(page.locator("#announcer")).to_contain_text("New failure SCC_UNREACHABLE in zypper")
    assert same_document(page)


def test_without_the_stream_the_dashboard_polls_the_feed(
    make_page: PageMaker, admin_api: Api, seeded: Seeded
) -> None:
    """An older server (or a proxy that blocks streaming): 404 on /events/stream falls back to /events."""
    page = make_page()
    page.route(re.compile(r"/events/stream"), refuse)
    build = new_build(admin_api, "alma-9")
    sign_in(page, *VIEWER)
    expect(page.locator("#live-status")).to_have_text("Live (polling)")
    admin_api.state(str(build["id"]), 50, "polled")
    expect(page.locator('td[data-combo="gcp/alma-9/base"]')).to_contain_text("50%")


def refuse(route: Route) -> None:
    route.fulfill(status=404, content_type="application/problem+json", body='{"status": 404}')


def test_an_expired_session_returns_to_sign_in_and_then_to_the_same_page(
    page: Page, admin_api: Api, seeded: Seeded
) -> None:
    sign_in(page, *VIEWER, start="/ui/#/failures")
    expect(page.get_by_role("heading", name="Failures", level=1)).to_be_visible()
    # The server stops accepting the token (expired, user disabled); the next call the page makes gets 401.
    page.evaluate(
        "sessionStorage.setItem('buildstate.session', JSON.stringify({token: 'not-a-token'}));"
        "location.hash = '#/';"
    )
    expect(page.get_by_role("heading", name="Sign in to buildstate")).to_be_visible()
    expect(page.get_by_text("Your session has ended")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('buildstate.session')") is None
    page.get_by_label("Username").fill(VIEWER[0])
    page.get_by_label("Password").fill(VIEWER[1])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Build matrix")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to buildstate")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
