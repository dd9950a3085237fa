"""A build's artifacts on the dashboard: grouped by region on the build page with a copy button per external
id, counted by region in the matrix, both kept live; hostile ids and labels stay text.

These builds live on their own platform ("openstack"), so the other browser tests' views stay as seeded.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect
from ui_harness import ADMIN, VIEWER, Api, PageMaker, Seeded, screenshot, sign_in

pytestmark = pytest.mark.slow  # a real server and a real browser

EU = {"region": "eu-west-1", "kind": "ami", "external_id": "ami-0eu1111", "labels": {"arch": "x86_64"}}
US = {"region": "us-east-1", "kind": "ami", "external_id": "ami-0us2222"}
DISK = {"kind": "file", "external_id": "output/rhel-9.4.qcow2"}
MARKUP = '<img src=x onerror="window.__ran = 1">'


def test_the_build_page_lists_artifacts_by_region_and_both_views_follow_new_ones_live(
    make_page: PageMaker, admin_api: Api, seeded: Seeded
) -> None:
    build = admin_api.create("openstack", "rhel-9.4", "base", "os-rhel-9.4-base-1")
    admin_api.state(build["id"], 90, "Snapshot and image registration")
    admin_api.artifacts(build["id"], EU, DISK)

    matrix = make_page()
    sign_in(matrix, *VIEWER)
    badge = matrix.locator('td[data-combo="openstack/rhel-9.4/base"] .cell-artifacts')
    expect(badge).to_have_text("Artifacts in 1 region")
    expect(badge).to_have_attribute("title", "2 artifacts: eu-west-1")

    page = make_page()
    sign_in(page, *VIEWER, start=f"/ui/#/build/{build['id']}")
    section = page.get_by_role("region", name=re.compile("^Artifacts"))
    expect(section.get_by_role("heading", level=2)).to_have_text("Artifacts2 artifacts")
    eu = section.get_by_role("region", name="eu-west-1")
    expect(eu.locator("tbody tr")).to_have_count(1)
    expect(eu.locator("tbody tr td").nth(0)).to_have_text("ami")
    expect(eu.locator(".external-id")).to_have_text("ami-0eu1111")
    expect(eu.locator("tbody tr td").nth(2)).to_have_text("openstack")
    expect(eu.get_by_role("list", name="Artifact labels")).to_contain_text("x86_64")
    expect(eu.locator(".recorded")).to_contain_text(f"by user:{ADMIN[0]}")
    # Region-less artifacts come last, under their own heading.
    regions = section.locator(".artifact-region h3")
    expect(regions).to_have_text(["eu-west-11 artifact", "No region1 artifact"])  # name, then count
    expect(section.get_by_role("region", name="No region").locator(".external-id")).to_have_text(
        "output/rhel-9.4.qcow2"
    )
    expect(page.get_by_role("list", name="Labels")).to_have_count(1)  # the build's own, not the artifacts'

    # A new region arrives over the stream: the page lists it and says so, the matrix counts it.
    page.evaluate("window.__sameDocument = true")
    admin_api.artifacts(build["id"], US, EU)  # EU again is a replay: only US is new
    expect(section.get_by_role("region", name="us-east-1").locator(".external-id")).to_have_text(
        "ami-0us2222"
    )
    expect(regions).to_have_count(3)
    expect(section.locator("tbody tr")).to_have_count(3)
    expect(page.locator(".tl-artifact").last).to_contain_text("Recorded 1 artifact")
    expect(page.locator("#announcer")).to_have_text("This build recorded 1 artifact")
    # The build's state line is the last state change's, not blanked by an event that changes no state.
    expect(page.locator(".build-message")).to_have_text("Snapshot and image registration")
    assert page.evaluate("window.__sameDocument === true")
    expect(badge).to_have_text("Artifacts in 2 regions")
    expect(badge).to_have_attribute("title", "3 artifacts: eu-west-1, us-east-1")
    expect(matrix.locator('td[data-combo="openstack/rhel-9.4/base"] .cell-message')).to_have_text(
        "Snapshot and image registration"
    )
    screenshot(page, "build-artifacts")


def test_the_copy_button_puts_the_external_id_on_the_clipboard(
    page: Page, admin_api: Api, seeded: Seeded
) -> None:
    build = admin_api.create("openstack", "rhel-9.4", "copy-check", "os-copy-1")
    admin_api.artifacts(build["id"], EU, US)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, *VIEWER, start=f"/ui/#/build/{build['id']}")
    button = page.locator("tr", has_text="ami-0us2222").get_by_role("button")
    expect(button).to_have_accessible_name("Copy ami-0us2222")
    button.click()
    expect(button).to_have_accessible_name("Copied ami-0us2222")
    assert page.evaluate("navigator.clipboard.readText()") == "ami-0us2222"
    expect(page.locator("#announcer")).to_have_text("Copied to the clipboard")


def test_without_the_clipboard_api_the_copy_button_selects_the_id(
    page: Page, admin_api: Api, seeded: Seeded
) -> None:
    build = admin_api.create("openstack", "rhel-9.4", "copy-check", "os-copy-2")
    admin_api.artifacts(build["id"], EU)
    # As on a page served over plain http from another host: there is no navigator.clipboard.
    page.add_init_script("Object.defineProperty(Navigator.prototype, 'clipboard', { get: () => undefined })")
    sign_in(page, *VIEWER, start=f"/ui/#/build/{build['id']}")
    assert page.evaluate("navigator.clipboard") is None
    button = page.locator("tr", has_text="ami-0eu1111").get_by_role("button")
    button.click()
    # Chromium still copies a selection on request (execCommand); where it would not, the id stays selected.
    expect(button).to_have_accessible_name(re.compile(r"^(Copied|Selected) ami-0eu1111$"))
    assert page.evaluate("window.getSelection().toString()") == "ami-0eu1111"


def test_hostile_external_ids_and_labels_are_shown_as_text(
    page: Page, admin_api: Api, seeded: Seeded
) -> None:
    build = admin_api.create("openstack", "rhel-9.4", "hostile", "os-hostile-1")
    admin_api.artifacts(
        build["id"],
        {
            "region": "eu-west-1",
            "kind": "ami",
            "external_id": MARKUP,
            "labels": {"note": "<b>bold</b> <i>v</i>"},
        },
    )
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, *VIEWER)
    expect(page.locator('td[data-combo="openstack/rhel-9.4/hostile"] .cell-artifacts')).to_have_text(
        "Artifacts in 1 region"
    )
    page.goto(f"/ui/#/build/{build['id']}")
    section = page.get_by_role("region", name=re.compile("^Artifacts"))
    expect(section.locator(".external-id")).to_have_text(MARKUP)
    expect(section.get_by_role("list", name="Artifact labels")).to_contain_text("<b>bold</b> <i>v</i>")
    expect(page.locator(".tl-artifacts")).to_contain_text(MARKUP)
    section.get_by_role("button", name=f"Copy {MARKUP}").click()
    assert page.evaluate("navigator.clipboard.readText()") == MARKUP
    for selector in ("img[src=x]", "b", "i"):
        assert page.locator(f"main {selector}").count() == 0, selector
    assert page.evaluate("window.__ran") is None
