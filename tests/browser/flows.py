"""Steps of the studio's flows that several browser modules take."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

SECONDS = 2
FPS = 12
SIZE = "416x240"


def wait_until(page: Any, expression: str, arg: Any = None, timeout_s: float = 30) -> Any:
    """Poll `expression` (a function of `arg`) until it is truthy. Playwright's wait_for_function polls
    by evaluating a string inside the page, which the page's CSP refuses (no 'unsafe-eval')."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(expression, arg)
        if value or time.monotonic() > deadline:
            assert value, f"{expression} stayed falsy for {timeout_s} s"
            return value
        page.wait_for_timeout(100)


def choose_photos(page: Any, a: Path, b: Path) -> None:
    page.set_input_files("#photo-a", str(a))
    page.set_input_files("#photo-b", str(b))


def fill_small_job(page: Any, seconds: int = SECONDS, size: str = SIZE, fps: int = FPS) -> None:
    page.fill("#seconds", str(seconds))
    if page.get_attribute(".advanced", "open") is None:
        page.click(".advanced summary")
    page.fill("#size", size)
    page.fill("#fps", str(fps))


def wait_status(page: Any, status: str, timeout_s: float = 120) -> None:
    page.wait_for_selector(f"#job[data-status={status}]", state="attached", timeout=timeout_s * 1000)


def job_id(page: Any) -> str:
    return page.text_content("#job-id").strip()


def submit_tiny_job(page: Any, subject_files: dict[str, Path]) -> str:
    choose_photos(page, subject_files["a"], subject_files["b"])
    for subject in ("a", "b"):
        page.wait_for_selector(f"#overlay-{subject}[data-landmarks='68']", state="visible")
        page.check(f"#consent-{subject}")
    fill_small_job(page, seconds=1, size="128x128", fps=8)
    before = page.text_content("#job-id")
    page.click("#submit")
    wait_until(page, "(before) => document.querySelector('#job-id').textContent !== before", before)
    return job_id(page)
