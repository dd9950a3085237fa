"""What pipelines write is shown, never run: markup stays text, and only http(s) links become links.

Builds here live on their own platform ("lab"), so the other browser tests' views stay as seeded.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect
from ui_harness import VIEWER, Api, Seeded, sign_in

pytestmark = pytest.mark.slow  # a real server and a real browser

MARKUP = '<img src=x onerror="window.__ran = 1">'
SCRIPT = "<script>window.__ran = 2</script>"


def test_markup_in_build_data_is_shown_as_text_and_never_runs(
    page: Page, admin_api: Api, seeded: Seeded
) -> None:
    build = admin_api.create(
        "lab", "rhel-9.4", "base", "lab-markup-1",
        labels={"note": MARKUP, "owner": '"quoted" & <b>bold</b>'},
        provenance={"pipeline": "p", "job": "j", "build_name": "1", "build_url": "javascript:window.__ran=3"},
    )  # fmt: skip
    admin_api.state(build["id"], 25, SCRIPT)
    admin_api.fail(build["id"], f"{MARKUP} broke", "E<1>", "<i>component</i>", details={"html": SCRIPT})

    sign_in(page, *VIEWER)
    lab = page.locator('td[data-combo="lab/rhel-9.4/base"]')
    expect(lab.locator(".cell-message")).to_have_text(f"{MARKUP} broke")
    expect(lab.locator(".badge-failure")).to_contain_text("E<1>")
    expect(lab.locator(".badge-failure")).to_contain_text("<i>component</i>")

    lab.get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("lab-markup-1")
    labels = page.get_by_role("list", name="Labels")
    expect(labels).to_contain_text(MARKUP)
    expect(labels).to_contain_text('"quoted" & <b>bold</b>')
    expect(page.locator(".tl-state .tl-message")).to_have_text(SCRIPT)
    page.get_by_role("region", name="Failure").get_by_text("Details").click()
    expect(page.get_by_role("region", name="Failure").locator("pre")).to_contain_text(SCRIPT)
    # A javascript: build_url is not a link anywhere on the page.
    expect(page.get_by_role("region", name="Current state")).to_contain_text("no link recorded")
    assert page.locator('a[href^="javascript:"]').count() == 0

    page.goto("/ui/#/failures?platform=lab")
    expect(page.locator("table.groups tbody tr")).to_contain_text("<i>component</i>")
    for selector in ("img[src=x]", "b", "i"):
        assert page.locator(f"main {selector}").count() == 0, selector
    assert page.evaluate("window.__ran") is None


def test_an_unknown_build_or_page_says_so(page: Page, seeded: Seeded) -> None:
    sign_in(page, *VIEWER, start="/ui/#/build/no-such-build")
    expect(page.get_by_role("heading", level=1)).to_have_text("Build not found")
    expect(page.get_by_text('There is no build "no-such-build".')).to_be_visible()
    page.goto("/ui/#/channels/%E0%A4%A?platform=x")  # a malformed escape is a name, not a broken page
    expect(page.get_by_role("heading", level=1)).to_contain_text("%E0%A4%A")
    page.goto("/ui/#/nowhere")
    expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
    page.get_by_role("link", name="Go to the build matrix").click()
    expect(page).to_have_url(re.compile(r"/ui/#/$"))
    expect(page.get_by_role("heading", name="Build matrix")).to_be_visible()
