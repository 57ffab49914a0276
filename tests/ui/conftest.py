"""Fixtures of the browser tests: one headless Chromium per module, a fresh context per test, screenshots.

Each test's page records console errors, uncaught exceptions and any request leaving the machine; the test
fails at teardown if there were any (expected HTTP error noise is declared with `console.allow(...)`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)

from dkron_nats.http import ui_api

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
REPO = Path(__file__).resolve().parent.parent.parent
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
TIMEOUT_MS = 10_000
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}

expect.set_options(timeout=TIMEOUT_MS)


def _check_prerequisites() -> None:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's `chromium` package "
            "(apt-get install chromium; CI installs it)",
            pytrace=False,
        )
    if not (ui_api.UI_DIR / "index.html").is_file():
        pytest.fail(
            f"the web UI is not built ({ui_api.UI_DIR}/index.html is missing): run `make ui` first",
            pytrace=False,
        )


@pytest.fixture(scope="session", autouse=True)
def _prerequisites() -> None:
    """Checked before any server starts: a missing browser or app fails every test at once, loudly."""
    _check_prerequisites()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """One headless Chromium for the whole module (each test opens its own context)."""
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    try:
        yield chromium
    finally:
        chromium.close()


@dataclass
class Console:
    """What the pages of one test logged as errors, and which of them the test expects."""

    errors: list[str] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Expected noise, e.g. r"status of 400" when a test provokes a refused save."""
        self.allowed.append(re.compile(pattern))

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location.get("url", "")
            self.errors.append(f"{message.text} ({where})" if where else message.text)

    def on_page_error(self, error: object) -> None:
        self.errors.append(f"uncaught: {error}")

    def on_request(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in LOCAL_HOSTS:
            self.remote.append(url)

    def watch(self, page: Page) -> Page:
        page.on("console", self.on_console)
        page.on("pageerror", self.on_page_error)
        page.on("request", lambda request: self.on_request(request.url))
        return page

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


@pytest.fixture
def console() -> Console:
    return Console()


@dataclass
class Contexts:
    """Browser contexts of one test: all closed at its end."""

    browser: Browser
    console: Console
    opened: list[BrowserContext] = field(default_factory=list)

    def new_page(self, viewport: ViewportSize | None = None) -> Page:
        context = self.browser.new_context(viewport=viewport or DESKTOP)
        context.set_default_timeout(TIMEOUT_MS)
        self.opened.append(context)
        return self.console.watch(context.new_page())

    def close(self) -> None:
        for context in self.opened:
            context.close()


@pytest.fixture
def contexts(browser: Browser, console: Console) -> Iterator[Contexts]:
    opened = Contexts(browser, console)
    try:
        yield opened
        assert not console.remote, f"the page made requests leaving the machine: {console.remote}"
        bad = console.unexpected()
        assert not bad, "the page logged errors:\n" + "\n".join(bad)
    finally:
        opened.close()


@pytest.fixture
def page(contexts: Contexts) -> Page:
    """A fresh desktop-sized (1280x800) page in its own context."""
    return contexts.new_page()


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    where = Path(os.environ.get("DKRON_NATS_UI_ARTIFACTS") or REPO / "ui-artifacts" / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


Shot = Callable[..., Path]


@pytest.fixture
def shot(screenshot_dir: Path, page: Page) -> Shot:
    """`shot(name)` saves a full-page PNG of the test's page (or of `page=`) as <name>.png."""

    def take(name: str, page: Page = page, full_page: bool = True) -> Path:
        path = screenshot_dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page, animations="disabled", caret="hide")
        return path

    return take
