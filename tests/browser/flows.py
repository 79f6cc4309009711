"""Steps of the studio's flows that several browser modules take."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SECONDS = 2
FPS = 12
SIZE = "416x240"


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
    page.wait_for_function("(before) => document.querySelector('#job-id').textContent !== before", arg=before)
    return job_id(page)
