"""Browser tests: Debian's Chromium (headless, through Playwright) against a real ``buildstate serve``.

Playwright drives the browser at /usr/bin/chromium; it never downloads one of its own. Locally, a machine
without Chromium skips these tests with the reason; under CI (``CI`` set) that is a failure, since
``scripts/test`` installs it. Every page the tests open may only reach the service on 127.0.0.1: any other
request is refused by the browser context and fails the test, as does any script error or CSP violation.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# pytest runs with --import-mode=importlib, which puts no test folder on sys.path; the harness module has a
# name no other folder uses.
sys.path.insert(0, str(Path(__file__).parent))

from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Route, sync_playwright
from ui_harness import ADMIN, CHROMIUM, CHROMIUM_ARGS, Api, PageMaker, Seeded, Service, seed, start_service

# What a page may log as an error without failing its test: the browser's own line for an HTTP error
# answer, which the tests provoke on purpose (a session that ends, a wrong password, a refused revocation,
# a malformed channel name).
_EXPECTED_CONSOLE = re.compile(r"^Failed to load resource: the server responded with a status of 40[0149]")


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install Debian's browser with `apt-get install chromium`"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory, chromium: Path) -> Iterator[Service]:
    started = start_service(tmp_path_factory.mktemp("ui-service"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def admin_api(service: Service) -> Api:
    return Api(service.url).sign_in(*ADMIN)


@pytest.fixture(scope="session")
def seeded(admin_api: Api) -> Seeded:
    return seed(admin_api)


# Module scope, not session: while sync_playwright() is open it keeps an asyncio loop running in this thread,
# which would break every async test that runs after tests/ui.
@pytest.fixture(scope="module")
def playwright_driver(chromium: Path) -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright_driver: Playwright, chromium: Path) -> Iterator[Browser]:
    launched = playwright_driver.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
    try:
        yield launched
    finally:
        launched.close()


class PageProblems:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.outside: list[str] = []

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not _EXPECTED_CONSOLE.match(message.text):
            self.errors.append(message.text)


@pytest.fixture
def make_page(browser: Browser, service: Service) -> Iterator[PageMaker]:
    """``make_page(width=..., height=..., dark=False)``: a fresh browser context (own sessionStorage)."""
    contexts = []
    problems = PageProblems()
    own_origin = re.compile(rf"^{re.escape(service.url)}/")

    def block_outside(route: Route) -> None:
        problems.outside.append(route.request.url)
        route.abort()

    def make(width: int = 1280, height: int = 900, *, dark: bool = False) -> Page:
        context = browser.new_context(
            viewport={"width": width, "height": height},
            color_scheme="dark" if dark else "light",
            locale="en-GB",
            timezone_id="UTC",
            base_url=service.url,
        )
        context.route(lambda url: not own_origin.match(url), block_outside)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.on("pageerror", lambda error: problems.errors.append(f"uncaught: {error}"))
        page.on("console", problems.console)
        return page

    yield make
    for context in contexts:
        context.close()
    assert not problems.errors, f"the page reported errors: {problems.errors}"
    assert not problems.outside, f"the page tried to leave 127.0.0.1: {problems.outside}"


@pytest.fixture
def page(make_page: PageMaker) -> Page:
    return make_page()
