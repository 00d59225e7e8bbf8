"""Playwright helpers: Debian's chromium, an origin guard on every request, screenshots."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, Request, sync_playwright

REPO_ROOT = Path(__file__).resolve().parents[3]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's chromium under Playwright, closed on exit."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class OriginGuard:
    """Collects every request a page makes that does not go to the console's own origin."""

    def __init__(self, origin: str) -> None:
        self.origin = origin.rstrip("/")
        self.seen: list[str] = []
        self.foreign: list[str] = []

    def __call__(self, request: Request) -> None:
        url = request.url
        self.seen.append(url)
        if url.startswith(("data:", "blob:", "about:")):
            return
        if not (url == self.origin or url.startswith(f"{self.origin}/")):
            self.foreign.append(url)


@contextmanager
def console_page(
    browser: Browser, origin: str, *, javascript: bool = True
) -> Iterator[tuple[Page, OriginGuard]]:
    context: BrowserContext = browser.new_context(
        base_url=origin, java_script_enabled=javascript, viewport={"width": 1280, "height": 860}
    )
    if javascript:
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=origin)
    guard = OriginGuard(origin)
    context.on("request", guard)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield page, guard
    finally:
        context.close()
    assert not guard.foreign, f"requests left the box: {guard.foreign}"


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Page, username: str, password: str) -> None:
    page.goto("/console/signin")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
