"""Browser fixtures: Debian's Chromium driven by Playwright (sync API), against the suite's Serve app.

Nothing is downloaded: Playwright runs the system's /usr/bin/chromium (`executable_path`), never a
browser of its own (`playwright install`). Without Chromium the browser modules skip, saying how to
get it. Every page records the URLs it requests, so a test can check that none leaves the service.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from kiss_core.faces.synthetic import synthetic_subject_png

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM_MISSING = (
    "needs Chromium: `apt-get install chromium` (Debian's package; .ci/run installs it). "
    "The tests use the system browser, never `playwright install`."
)
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}
# Screenshots go to the test's temporary directory; with KISSGEN_SCREENSHOTS=DIR (`make screenshots`:
# docs/img) they are copied there too, so a plain test run leaves the committed ones alone.
SCREENSHOTS_ENV = "KISSGEN_SCREENSHOTS"


def chromium_path() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def require_browser() -> str:
    """The Chromium executable, or skip the calling module with how to install it."""
    path = chromium_path()
    if path is None:
        pytest.skip(CHROMIUM_MISSING, allow_module_level=True)
    pytest.importorskip("playwright.sync_api", reason="needs the [dev] extra (playwright)")
    return path


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Package-scoped, not session-scoped: Playwright's sync API runs an event loop in this thread while it
    is open, and every later test that calls asyncio.run() would fail with "cannot be called from a
    running event loop"; it stops when the browser tests are done."""
    from playwright.sync_api import sync_playwright

    executable = require_browser()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Studio:
    """A page of the studio in its own browser context, and every URL it asked for."""

    page: Page
    context: BrowserContext
    base: str  # the service's URL the page was opened at, without a trailing slash
    requests: list[str] = field(default_factory=list)

    def open(self) -> Page:
        self.page.goto(self.base + "/")
        self.page.wait_for_selector("body[data-ready=true]", state="attached")
        return self.page

    def outside_requests(self) -> list[str]:
        origin = urlsplit(self.base)
        return [
            url
            for url in self.requests
            if not url.startswith(("blob:", "data:"))
            and (urlsplit(url).scheme, urlsplit(url).netloc) != (origin.scheme, origin.netloc)
        ]

    def stats(self) -> dict[str, Any]:
        return self.page.evaluate("() => ({...window.studio.stats})")


def new_studio(browser: Browser, base: str, viewport: dict[str, int], **options: Any) -> Studio:
    context = browser.new_context(viewport=viewport, accept_downloads=True, **options)
    page = context.new_page()
    studio = Studio(page, context, base.rstrip("/"))
    context.on("request", lambda request: studio.requests.append(request.url))
    page.set_default_timeout(30_000)
    return studio


@pytest.fixture
def studio_factory(browser: Browser) -> Iterator[Any]:
    """new_studio(base, viewport) for this test; every context it made is closed after the test."""
    made: list[Studio] = []

    def make(base: str, viewport: dict[str, int] = DESKTOP, **options: Any) -> Studio:
        made.append(new_studio(browser, base, viewport, **options))
        return made[-1]

    yield make
    for studio in made:
        studio.context.close()


@pytest.fixture(scope="session")
def subject_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two synthetic subjects (faces of nobody) as files for the page's photo pickers."""
    root = tmp_path_factory.mktemp("subjects")
    paths = {}
    for subject, index in (("a", 0), ("b", 1)):
        paths[subject] = root / f"{subject}.png"
        paths[subject].write_bytes(synthetic_subject_png(index))
    return paths


@pytest.fixture(scope="session")
def photo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Several photos of the two synthetic subjects (the same face mirrored or slightly rotated, as
    tests/support/photo_variants makes them) and a third subject as the stranger, by file name."""
    from kiss_core.faces.synthetic import synthetic_subject
    from kiss_core.media.images import encode_png
    from tests.support.photo_variants import mirrored, rotated

    a, b = synthetic_subject(0), synthetic_subject(1)
    images = {
        "a.png": a,
        "a-mirrored.png": mirrored(a),
        "a-rotated.png": rotated(a),
        "b.png": b,
        "b-mirrored.png": mirrored(b),
        "b-rotated.png": rotated(b),
        "b-tilted.png": rotated(b, -5),
        "stranger.png": synthetic_subject(2),
    }
    root = tmp_path_factory.mktemp("photos")
    for name, image in images.items():
        (root / name).write_bytes(encode_png(image))
    return {name: root / name for name in images}


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots and timings are kept for this run."""
    return tmp_path_factory.mktemp("browser-artefacts")


def keep_screenshot(page: Page, artefacts: Path, name: str) -> Path:
    """A full-page screenshot in this run's artefacts, copied to $KISSGEN_SCREENSHOTS when set."""
    path = artefacts / name
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    published = os.environ.get(SCREENSHOTS_ENV)
    if published:
        Path(published).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(published) / name)
    return path
