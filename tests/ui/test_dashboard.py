"""The dashboard as a person uses it: sign in, read the matrix, filter it, open builds, read failures.

Each test saves screenshots under artifacts/screenshots/. ``BUILDSTATE_UPDATE_README_SCREENSHOT=1``
also refreshes docs/img/dashboard.png, the picture in the README (committed, so only on request).
"""

from __future__ import annotations

import os
import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Locator, Page, expect
from ui_harness import (
    ADMIN,
    README_SCREENSHOT,
    VIEWER,
    Api,
    PageMaker,
    Seeded,
    concourse,
    screenshot,
    sign_in,
)

pytestmark = pytest.mark.slow  # a real server and a real browser


def cell(page: Page, combo: str) -> Locator:
    return page.locator(f'td[data-combo="{combo}"]')


def test_sign_in_then_the_matrix_shows_the_latest_build_of_every_combination(
    page: Page, seeded: Seeded
) -> None:
    page.goto("/ui/")
    expect(page.get_by_role("heading", name="Sign in to buildstate")).to_be_visible()
    expect(page.get_by_label("Username")).to_be_focused()
    screenshot(page, "sign-in")

    page.get_by_label("Username").fill(ADMIN[0])
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    expect(page).to_have_url(re.compile(r"#/sign-in"))

    page.get_by_label("Password").fill(ADMIN[1])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Build matrix")).to_be_visible()
    # The token lives for this tab only: sessionStorage, never localStorage or a cookie.
    assert page.evaluate("Object.keys(sessionStorage)") == ["buildstate.session"]
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []

    running = cell(page, "aws/rhel-9.4/cis-hardened")
    expect(running).to_contain_text("75%")
    expect(running).to_contain_text("Running")
    expect(running).to_contain_text("Ansible configuration completed")
    expect(running.locator("progress")).to_have_attribute("value", "75")
    expect(running.locator("time")).to_have_text(re.compile(r"just now|\d+ s ago|\d+ min ago"))

    # The newest build of a combination wins: the failed 0999 was superseded by 1001, which succeeded.
    latest = cell(page, "aws/rhel-9.4/base")
    expect(latest).to_contain_text("rhel-9.4-base-1001")
    expect(latest).to_contain_text("Succeeded")
    expect(latest.locator(".badge-failure")).to_have_count(0)

    failed = cell(page, "aws/rhel-8.10/base")
    expect(failed).to_have_attribute("data-status", "failed")
    expect(failed.locator(".badge-failure")).to_contain_text("PACKER_TIMEOUT")
    expect(failed.locator(".badge-failure")).to_contain_text("packer")
    expect(cell(page, "vsphere/rhel-9.4/cis-hardened").locator(".badge-failure")).to_contain_text("openscap")
    expect(cell(page, "aws/ubuntu-22.04/base")).to_contain_text("attempt 2")

    counts = page.locator(".counts")
    for status in ("running", "failed", "succeeded"):
        expect(counts.locator(f".count-{status}")).to_contain_text(re.compile(rf"\d+ {status}"))
    expect(page.get_by_role("region", name="aws")).to_be_visible()
    expect(page.get_by_role("region", name="vsphere")).to_be_visible()
    expect(page.locator("#live-status")).to_have_text("Live")
    screenshot(page, "matrix")
    if os.environ.get("BUILDSTATE_UPDATE_README_SCREENSHOT"):
        page.set_viewport_size({"width": 1200, "height": 760})
        page.screenshot(path=str(README_SCREENSHOT), animations="disabled", caret="hide")


@pytest.mark.parametrize("start", ["/ui/", "/ui/#/failures", "/ui/#/build/rhel-9.4-base-1001"])
def test_a_visitor_without_a_session_goes_to_sign_in_without_any_api_call(
    page: Page, seeded: Seeded, start: str
) -> None:
    asked: list[str] = []
    page.on("request", lambda request: asked.append(urlsplit(request.url).path))
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.goto(start)
    expect(page.get_by_role("heading", name="Sign in to buildstate")).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert [url for url in asked if not url.startswith(("/ui/", "/favicon"))] == [], asked
    assert not [text for text in console if "401" in text], console
    if "#" in start:  # a shared link comes back after signing in
        _, _, query = urlsplit(page.url).fragment.partition("?")
        assert parse_qs(query)["next"] == ["#" + start.split("#")[1]]


def test_the_median_column_compares_a_step_with_the_same_step_of_other_builds(
    page: Page, admin_api: Api, seeded: Seeded
) -> None:
    """'Median, all builds' beside 5 -> 35 is over 5 -> 35 steps only, not every move out of 5."""
    quick = admin_api.create("gcp", "rhel-9.4", "median-check", "median-quick")
    admin_api.state(quick["id"], 5)
    admin_api.state(quick["id"], 35)
    slow = admin_api.create("gcp", "rhel-9.4", "median-check", "median-slow")
    admin_api.state(slow["id"], 5)
    time.sleep(1.5)
    admin_api.state(slow["id"], 40)  # pooled by the state it left, 5 -> 35 would show about 0.8 s
    history = admin_api.call("GET", f"/builds/{quick['id']}/history")
    [step] = [e for e in history["events"] if e["from_state_code"] == 5]

    took = step["duration_ms"]
    shown = f"{took} ms" if took < 1000 else f"{took / 1000:.1f} s"  # as format.js writes it

    sign_in(page, *VIEWER, start=f"/ui/#/build/{quick['id']}")
    row = page.locator("table.steps tbody tr").filter(has=page.get_by_role("rowheader", name="5 → 35"))
    expect(row.locator("td").first).to_have_text(shown)
    expect(row.locator("td").last).to_have_text(shown)  # its own: the only 5 -> 35 there is


def test_a_build_page_tells_the_whole_story_of_a_build(page: Page, seeded: Seeded) -> None:
    sign_in(page, *VIEWER)
    cell(page, "aws/ubuntu-22.04/base").get_by_role("link").click()
    expect(page).to_have_url(re.compile(rf"#/build/{seeded.reset['id']}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("ubuntu-22.04-base-1004")
    expect(page.get_by_role("heading", level=1)).to_be_focused()
    status = page.get_by_role("region", name="Current state")
    expect(status).to_contain_text("aws / ubuntu-22.04 / base")
    expect(status).to_contain_text("25")
    expect(status.locator("progress")).to_have_attribute("value", "25")

    # The Concourse build recorded by the resource, as a link out (opened in a new tab, never followed).
    link = status.get_by_role("link", name=re.compile(r"build-base #12"))
    expect(link).to_have_attribute("href", concourse("ubuntu-22.04", "build-base", 12)["build_url"])
    expect(link).to_have_attribute("rel", "noopener noreferrer")

    labels = page.get_by_role("list", name="Labels")
    expect(labels).to_contain_text("region")
    expect(labels).to_contain_text("eu-west-1")

    steps = page.locator("table.steps")
    expect(steps.locator("tbody tr")).to_have_count(3)  # 0 -> 10, 10 -> 25, and 25 -> ... still running
    expect(steps.get_by_role("rowheader", name="10 → 25")).to_be_visible()
    expect(steps.locator("tbody tr").first.locator("td").first).to_have_text(re.compile(r"\d+(\.\d)? (ms|s)"))

    first, second = (
        page.get_by_role("region", name=re.compile(r"^Attempt 1")),
        page.get_by_role("region", name=re.compile(r"^Attempt 2")),
    )
    expect(first.locator(".tl-failure")).to_contain_text("QUOTA_EXCEEDED")
    expect(first.locator(".tl-failure")).to_contain_text("aws-ec2")
    expect(first.locator(".tl-failure")).to_contain_text("Instance quota exceeded in eu-west-1")
    reset = second.locator(".tl-reset")
    expect(reset).to_contain_text("Why: Quota raised by cloud team (ticket OPS-4411); retrying")
    expect(reset).to_contain_text(f"Who: user:{ADMIN[0]}")
    expect(second.locator(".tl-item")).to_have_count(3)
    screenshot(page, "build")

    page.get_by_role("link", name="← Build matrix").click()
    cell(page, "aws/rhel-8.10/base").get_by_role("link").click()
    failure = page.get_by_role("region", name="Failure")
    expect(failure).to_contain_text("PACKER_TIMEOUT")
    expect(failure).to_contain_text("Timeout waiting for SSH")
    failure.get_by_text("Details").click()
    expect(failure.locator("pre")).to_contain_text('"builder": "amazon-ebs"')
    screenshot(page, "build-failed")


def test_filters_live_in_the_url_so_a_view_can_be_shared(make_page: PageMaker, seeded: Seeded) -> None:
    page = make_page()
    sign_in(page, *VIEWER)
    expect(cell(page, "aws/rhel-9.4/base")).to_be_visible()
    page.get_by_label("Platform", exact=True).select_option("azure")
    page.get_by_label("Status", exact=True).select_option("failed")
    expect(page).to_have_url(re.compile(r"#/\?platform=azure&status=failed$"))
    expect(page.locator("td[data-combo]")).to_have_count(1)
    expect(cell(page, "azure/windows-2022/base")).to_contain_text("ANSIBLE_UNREACHABLE")
    shared = page.url

    # Someone else opens the link: signs in first, then lands on the same filtered view.
    other = make_page()
    other.goto(shared)
    expect(other.get_by_role("heading", name="Sign in to buildstate")).to_be_visible()
    other.get_by_label("Username").fill(VIEWER[0])
    other.get_by_label("Password").fill(VIEWER[1])
    other.get_by_role("button", name="Sign in").click()
    expect(other).to_have_url(shared)
    expect(other.get_by_label("Platform", exact=True)).to_have_value("azure")
    expect(other.get_by_label("Status", exact=True)).to_have_value("failed")
    expect(other.locator("td[data-combo]")).to_have_count(1)

    other.get_by_role("link", name="Clear filters").click()
    expect(other.locator('td[data-combo^="aws/"]').first).to_be_visible()


def test_failures_page_groups_by_component_and_code_with_counts_and_a_trend(
    page: Page, seeded: Seeded
) -> None:
    sign_in(page, *VIEWER)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Failures").click()
    expect(page.get_by_role("heading", name="Failures", level=1)).to_be_visible()
    page.get_by_label("Platform", exact=True).select_option("aws")
    expect(page).to_have_url(re.compile(r"#/failures\?platform=aws&window=168$"))
    rows = page.locator("table.groups tbody tr")
    expect(rows).to_have_count(2)
    packer = rows.filter(has_text="PACKER_TIMEOUT")
    expect(packer.locator("th")).to_have_text("packer")
    expect(packer.locator(".group-count")).to_have_text("2")  # the superseded build failed the same way
    expect(packer.get_by_role("img")).to_have_attribute(
        "aria-label", re.compile(r"Trend of PACKER_TIMEOUT\..*: 2$")
    )
    expect(rows.filter(has_text="QUOTA_EXCEEDED").locator(".group-count")).to_have_text("1")
    expect(page.get_by_role("img", name=re.compile(r"^Failures per day"))).to_be_visible()
    expect(page.locator(".summary-line")).to_contain_text("3 failures in 3 builds, 2 kinds")

    page.get_by_label("Window").select_option("24")
    expect(page.get_by_role("heading", name="Failures per hour")).to_be_visible()
    page.get_by_label("Platform", exact=True).select_option("")
    expect(rows).to_have_count(4)
    screenshot(page, "failures")

    packer.get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("rhel-8.10-base-1003")


def test_keyboard_alone_reaches_every_part(page: Page, seeded: Seeded) -> None:
    sign_in(page, *VIEWER)
    expect(page.get_by_role("heading", name="Build matrix")).to_be_focused()  # where sign-in leads
    page.reload()  # the session survives a reload of the tab; focus starts at the top of the document
    expect(cell(page, "aws/rhel-9.4/base")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Build matrix")).to_be_focused()
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('cell-link')"):
            break
    else:
        raise AssertionError("Tab never reached a build in the matrix")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid", "a focused cell shows a focus ring"
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_be_focused()
    expect(page).to_have_url(re.compile(r"#/build/"))


def test_phone_width_and_dark_mode_stay_readable(make_page: PageMaker, seeded: Seeded) -> None:
    phone = make_page(390, 844, dark=True)
    sign_in(phone, *VIEWER)
    expect(cell(phone, "aws/rhel-8.10/base")).to_be_visible()
    overflow = "document.documentElement.scrollWidth - window.innerWidth"
    assert phone.evaluate(overflow) <= 0, "no sideways scrolling on a phone"
    background = phone.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)", "prefers-color-scheme: dark gives the dark palette"
    # On a phone each build is a card that names its image type (the table header is hidden).
    label = phone.evaluate(
        "getComputedStyle(document.querySelector('td[data-combo=\"aws/rhel-8.10/base\"]'), '::before')"
        ".content"
    )
    assert label == '"base"'
    screenshot(phone, "matrix-phone-dark")
    cell(phone, "aws/rhel-8.10/base").get_by_role("link").click()
    expect(phone.get_by_role("heading", level=1)).to_have_text("rhel-8.10-base-1003")
    assert phone.evaluate(overflow) <= 0
    screenshot(phone, "build-phone-dark")
    phone.goto("/ui/#/failures")
    expect(phone.locator("table.groups tbody tr").first).to_be_visible()
    assert phone.evaluate(overflow) <= 0
    screenshot(phone, "failures-phone-dark")

    desktop = make_page(1280, 900, dark=True)
    sign_in(desktop, *VIEWER)
    expect(cell(desktop, "aws/rhel-8.10/base")).to_be_visible()
    screenshot(desktop, "matrix-dark")
