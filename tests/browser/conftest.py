"""Playwright fixtures for the browser tests: Debian's Chromium, one context per person,
a screenshot of every open page under test-results/ when a test fails."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    expect,
    sync_playwright,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000
RESULTS = Path(__file__).resolve().parents[2] / "test-results"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Keep each phase's report on the item, so fixtures can tell whether the test failed.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="module")
def chromium_extra_args() -> list[str]:
    """More Chromium flags; a test module overrides this (e.g. to trust a CA)."""
    return []


@pytest.fixture(scope="module")
def browser(chromium_extra_args: list[str]) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if os.environ.get("RAYDECK_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RAYDECK_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    expect.set_options(timeout=TIMEOUT_MS)
    # While Playwright's sync API runs, its asyncio loop counts as running in this
    # thread, so Django would raise SynchronousOnlyOperation on any ORM call here (such
    # as transactional_db's flush). Nothing is really async: allow it, but only while
    # Playwright runs (module scope), so the rest of the suite keeps Django's check.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS + chromium_extra_args
        )
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Callable[[], Page]]:
    """Open a page in a fresh context (no cookies): one call per person in the story.
    Any Content Security Policy violation the browser reports fails the test: the
    console must work without inline scripts or styles but its own files, allowed by hash."""
    contexts: list[BrowserContext] = []
    csp_violations: list[str] = []

    def record(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            csp_violations.append(message.text)

    def factory() -> Page:
        context = browser.new_context()
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("console", record)
        return page

    yield factory
    call = getattr(request.node, "rep_call", None)
    if call is not None and call.failed:
        RESULTS.mkdir(exist_ok=True)
        stem = re.sub(r"[^\w.-]+", "_", request.node.nodeid)
        for i, context in enumerate(contexts):
            for j, page in enumerate(context.pages):
                page.screenshot(path=RESULTS / f"{stem}-{i}-{j}.png", full_page=True)
    for context in contexts:
        context.close()
    assert csp_violations == [], "the browser blocked content under the CSP"
