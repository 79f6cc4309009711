"""The web studio in a real browser (Chromium via Playwright) against the real Serve application.

Jobs are kept small (2 s at 12 fps, 416x240, through the page's advanced size field) so the whole
module stays near a minute; the cancel test asks for the largest clip so it is still running.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from kiss_core.media.video import encode_jpeg
from tests.browser.conftest import DESKTOP, PHONE, Studio, keep_screenshot, require_browser
from tests.browser.flows import (
    FPS,
    SECONDS,
    choose_photos,
    fill_small_job,
    job_id,
    submit_tiny_job,
    wait_status,
    wait_until,
)
from tests.conftest import ServeApp
from tests.support.photos import skimage_path

require_browser()

pytestmark = pytest.mark.slow

FACE_NOT_FOUND = "No face was found in this photo"


def drop_file(page: Any, target: str, path: Path) -> None:
    """Drop `path` on `target` as a file dragged from the desktop would be."""
    transfer = page.evaluate_handle(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "image/png"}));
            return transfer;
        }""",
        [path.name, base64.b64encode(path.read_bytes()).decode()],
    )
    page.dispatch_event(target, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(target, "drop", {"dataTransfer": transfer})


def serious_violations(page: Any) -> list[dict[str, Any]]:
    from axe_playwright_python.sync_playwright import Axe

    violations = Axe().run(page).response["violations"]
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]


def test_the_page_is_served_with_a_csp_that_forbids_inline_script(serve_app: ServeApp) -> None:
    with httpx.Client(base_url=serve_app.url, timeout=10) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = dict(d.strip().split(" ", 1) for d in page.headers["content-security-policy"].split(";"))
        assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
        assert "unsafe-inline" not in page.headers["content-security-policy"]
        assert csp["frame-ancestors"] == "'none'" and csp["connect-src"] == "'self'"
        assert '<script type="module" src="/static/studio.js">' in page.text
        assert "<script>" not in page.text and " style=" not in page.text
        script = client.get("/static/studio.js")
        assert script.headers["content-type"].startswith("text/javascript")
        again = client.get("/static/studio.js", headers={"If-None-Match": script.headers["etag"]})
        assert again.status_code == 304
        clip = client.get("/static/styles/peck.mp4")
        assert clip.headers["content-type"] == "video/mp4" and "max-age" in clip.headers["cache-control"]
        for path in ("/static/../graph.py", "/static/%2e%2e/graph.py", "/static/index.html", "/static/"):
            refused = client.get(path)
            assert refused.status_code == 404, path
            assert refused.headers["content-type"] == "application/problem+json", path


def test_the_whole_flow_from_photos_to_a_verified_and_reported_video(
    serve_app: ServeApp,
    studio_factory: Any,
    subject_files: dict[str, Path],
    photo_files: dict[str, Path],
    artefacts: Path,
) -> None:
    studio: Studio = studio_factory(serve_app.url, DESKTOP)
    page = studio.open()
    submit = page.locator("#submit")
    assert submit.is_disabled()

    choose_photos(page, subject_files["a"], subject_files["b"])
    page.set_input_files("#photo-a", str(photo_files["a-mirrored.png"]))  # a second photo of person A
    for subject in ("a", "b"):  # the face box and 68 landmarks drawn over each photo
        page.wait_for_selector(f"#overlay-{subject}[data-landmarks='68']", state="visible")
    wait_until(page, "() => document.querySelectorAll('#thumbs-a li[data-state=ok]').length === 2")
    for subject in ("a", "b"):
        assert page.get_attribute(f"#analysis-{subject}", "data-state") == "ok"
    assert submit.is_disabled()  # no consent yet
    page.check("#consent-a")
    assert submit.is_disabled()  # one of two
    page.check("#consent-b")
    assert submit.is_enabled()

    page.check("#style-peck")
    page.select_option("#background", "b")
    fill_small_job(page)
    submit.click()
    wait_status(page, "completed")
    video_id = job_id(page)
    with httpx.Client(base_url=serve_app.url, timeout=30) as client:
        params = client.get(f"/v1/videos/{video_id}").json()["params"]
    assert params["style"] == "peck" and params["background"] == "b", params

    stats = studio.stats()
    assert stats["events"] >= 2, stats  # the progress came as server-sent events...
    assert stats["polls"] == 0, stats  # ...not from polling
    assert stats["seen"][-1].startswith("completed:"), stats
    assert len(set(stats["seen"])) >= 2, stats  # the progress moved
    assert any(url.endswith(f"/v1/videos/{video_id}/events") for url in studio.requests)
    timings = {  # measured, not asserted: ms after navigation start
        "first_event_ms": stats["firstEventMs"],
        "submit_to_first_event_ms": stats["firstEventMs"] - stats["submittedMs"],
        "events": stats["events"],
    }
    (artefacts / "studio-timings.json").write_text(json.dumps(timings, indent=2))

    page.wait_for_selector("#result[data-loaded=true]", state="attached")
    wait_until(page, "() => document.querySelector('#result-video').readyState >= 3")
    duration = page.evaluate("document.querySelector('#result-video').duration")
    assert abs(duration - SECONDS) <= 1 / FPS + 1e-6, duration
    assert page.locator("#quality-rows tr").count() >= 5  # identity a and b, both, contact, flicker, lighting
    assert "Both people seen together" in (page.text_content("#quality-rows") or "")
    assert "Made by AI" in page.text_content("#provenance")

    with httpx.Client(base_url=serve_app.url, timeout=30) as client:
        api_video = client.get(f"/v1/videos/{video_id}/content", params={"variant": "video"}).content
        api_still = client.get(f"/v1/videos/{video_id}/content", params={"variant": "image"}).content
    downloads = {}
    for link, expected in (("#download-video", api_video), ("#download-image", api_still)):
        with page.expect_download() as info:
            page.click(link)
        path = Path(info.value.path())
        assert path.read_bytes() == expected, link
        downloads[link] = artefacts / info.value.suggested_filename
        shutil.copyfile(path, downloads[link])
    assert downloads["#download-video"].name == f"{video_id}.mp4"

    page.evaluate(  # show the kiss in the screenshot: the player at the contact frame
        """() => new Promise((done) => {
            const video = document.querySelector("#result-video");
            video.addEventListener("seeked", done, {once: true});
            video.currentTime = 1.0;
        })"""
    )
    keep_screenshot(page, artefacts, "studio-desktop.png")
    assert serious_violations(page) == []

    # Report this video.
    page.select_option("#report-reason", "impersonation")
    page.fill("#report-details", "A browser test's report.")
    page.click("#report-form button[type=submit]")
    report_id = page.wait_for_selector("#report-status[data-report-id]").get_attribute("data-report-id")
    assert report_id and report_id.startswith("rpt_")

    # Verify the downloaded file; then report it by its hash.
    page.set_input_files("#verify-file", str(downloads["#download-video"]))
    page.click("#verify-form button[type=submit]")
    page.wait_for_selector("#verify-result[data-ai-generated=true]", state="attached")
    assert video_id in page.text_content("#verify-result")  # the watermark names the job
    sha = hashlib.sha256(api_video).hexdigest()
    assert page.text_content("#verify-sha") == sha
    page.select_option("#verify-reason", "not_consented")
    page.click("#verify-report button[type=submit]")
    status = page.wait_for_selector("#verify-report-status[data-report-id]")
    file_report = status.get_attribute("data-report-id")
    records = [json.loads(p.read_text()) for p in (serve_app.store_root / "reports").rglob("*.json")]
    stored = {record["id"]: record for record in records}
    assert stored[report_id]["video_id"] == video_id and stored[report_id]["reason"] == "impersonation"
    assert stored[file_report]["file_sha256"] == sha

    # The same page, result and all, at phone size: one column, nothing wider than the screen.
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    keep_screenshot(page, artefacts, "studio-phone-result.png")
    assert studio.outside_requests() == []


def test_a_photo_without_a_face_is_refused_next_to_it_and_blocks_submit(
    serve_app: ServeApp, studio_factory: Any, subject_files: dict[str, Path], artefacts: Path
) -> None:
    studio: Studio = studio_factory(serve_app.url, PHONE, is_mobile=True, has_touch=True)
    page = studio.open()
    drop_file(page, "#drop-a", skimage_path("coffee.png"))  # dragged onto person A's picker
    page.set_input_files("#photo-b", str(subject_files["b"]))
    page.wait_for_selector("#analysis-a[data-state=bad]")
    page.wait_for_selector("#overlay-b[data-landmarks='68']", state="visible")
    assert FACE_NOT_FOUND in page.text_content("#analysis-a")
    assert page.get_attribute("#overlay-a", "data-landmarks") == "0"  # the photo, nothing drawn on it
    page.check("#consent-a")
    page.check("#consent-b")
    assert page.locator("#submit").is_disabled()
    assert "cannot be used" in page.text_content("#submit-hint")
    # The phone size: one column, nothing wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    assert page.locator("#camera-a").is_visible()  # a coarse pointer gets the camera capture too
    keep_screenshot(page, artefacts, "studio-phone.png")
    assert serious_violations(page) == []
    assert studio.outside_requests() == []
    # The CSP at work: an inline script (as an injected one would be) does not run, nor an inline style.
    ran = page.evaluate(
        """() => {
            const script = document.createElement("script");
            script.textContent = "window.inlineRan = true";
            document.body.append(script);
            const style = document.createElement("style");
            style.textContent = "body { visibility: hidden }";
            document.head.append(style);
            return [window.inlineRan === true, getComputedStyle(document.body).visibility];
        }"""
    )
    assert ran == [False, "visible"]


def test_cancel_keeps_a_canceled_record_and_erase_removes_it_from_your_videos(
    serve_app: ServeApp, studio_factory: Any, subject_files: dict[str, Path]
) -> None:
    studio: Studio = studio_factory(serve_app.url, DESKTOP)
    page = studio.open()
    choose_photos(page, subject_files["a"], subject_files["b"])
    for subject in ("a", "b"):
        page.wait_for_selector(f"#overlay-{subject}[data-landmarks='68']", state="visible")
        page.check(f"#consent-{subject}")
    fill_small_job(page, seconds=10, size="832x480", fps=24)  # long enough to still be running
    page.click("#submit")
    page.wait_for_selector("#job-cancel:enabled")
    video_id = job_id(page)
    page.click("#job-cancel")
    wait_status(page, "canceled", timeout_s=60)
    assert "Canceled" in page.text_content("#job-status")
    with httpx.Client(base_url=serve_app.url, timeout=10) as client:
        assert client.get(f"/v1/videos/{video_id}").json()["status"] == "canceled"

    page.click("#videos-refresh")
    row = page.locator(f"#videos-list li[data-id='{video_id}']")
    row.wait_for()
    assert "canceled" in row.text_content()
    row.get_by_role("button", name="Erase everything").click()
    page.wait_for_selector("#confirm-delete[open]")
    page.click("#confirm-yes")
    row.wait_for(state="detached")
    assert "erased" in page.text_content("#videos-status")
    with httpx.Client(base_url=serve_app.url, timeout=10) as client:
        assert client.get(f"/v1/videos/{video_id}").status_code == 404
    assert studio.outside_requests() == []


def test_a_stream_ended_early_resumes_after_the_last_event_and_a_refused_one_falls_back_to_polling(
    serve_app: ServeApp, studio_factory: Any, subject_files: dict[str, Path]
) -> None:
    # 1. The first stream is cut after its first event: the page reconnects with that event's id.
    asked: list[str | None] = []

    def cut_first_stream(route: Any) -> None:
        asked.append(route.request.headers.get("last-event-id"))
        response = route.fetch()  # the real stream, to its end
        if len(asked) > 1:
            route.fulfill(response=response)
            return
        first = response.text().split("\n\n")[0] + "\n\n"
        route.fulfill(status=200, headers=response.headers, body=first)
        asked.append(re.search(r"^id: (\d+)$", first, re.M)[1])  # type: ignore[index]

    studio: Studio = studio_factory(serve_app.url, DESKTOP)
    page = studio.open()
    page.route("**/events", cut_first_stream)
    submit_tiny_job(page, subject_files)
    wait_status(page, "completed")
    first_id = asked[1]
    assert asked == [None, first_id, first_id], asked  # request 1, the id it gave, request 2 resumed
    stats = studio.stats()
    assert stats["streams"] == 2 and stats["polls"] == 0, stats

    # 2. The stream refused (a replica's bound reached): the page polls every second instead.
    def refuse(route: Any) -> None:
        problem = {"code": "too_many_streams", "status": 503, "title": "Too many streams", "detail": "busy"}
        route.fulfill(status=503, json=problem, headers={"Retry-After": "5"})

    page.unroute("**/events")
    page.route("**/events", refuse)
    submit_tiny_job(page, subject_files)
    wait_status(page, "completed")
    stats = studio.stats()
    assert stats["events"] == 0 and stats["polls"] >= 1, stats
    page.wait_for_selector("#result[data-loaded=true]", state="attached")


def test_a_diffusion_progress_preview_is_shown_while_the_job_runs(
    serve_app: ServeApp, studio_factory: Any, subject_files: dict[str, Path]
) -> None:
    """The preview backend writes no progress preview, so the first event is given one (as a diffusion
    backend's job would carry) and the image it names is served by the router; then the real stream."""
    preview = encode_jpeg(np.full((60, 104, 3), (200, 40, 90), np.uint8))
    streams: list[Any] = []
    preview_asked: list[str] = []

    def events(route: Any) -> None:
        streams.append(route)
        if len(streams) > 1:
            return  # held: answered by the test once it has seen the preview
        video_id = route.request.url.rsplit("/", 2)[-2]
        job = httpx.get(f"{serve_app.url}/v1/videos/{video_id}", timeout=10).json()
        url = f"/v1/videos/{video_id}/content?variant=progress"
        job |= {"status": "in_progress", "stage": "generation", "progress": 40, "revision": 1}
        job |= {"progress_preview": {"url": url, "revision": 1}, "queue_position": None, "eta_s": 12.4}
        body = f"id: 1\nevent: job\ndata: {json.dumps(job)}\n\n"
        route.fulfill(status=200, content_type="text/event-stream", body=body)

    def progress_image(route: Any) -> None:
        preview_asked.append(route.request.url)
        route.fulfill(status=200, content_type="image/jpeg", body=preview)

    studio: Studio = studio_factory(serve_app.url, DESKTOP)
    page = studio.open()
    page.route("**/events", events)
    page.route("**/content?variant=progress", progress_image)
    submit_tiny_job(page, subject_files)
    page.wait_for_selector("#job-preview:visible")
    assert page.get_attribute("#job-preview", "src").startswith("blob:")
    assert page.evaluate("document.querySelector('#job-preview').naturalWidth") == 104
    assert "40 %" in page.text_content("#job-status")
    assert page.text_content("#job-queue") == "about 12 s left"
    for _ in range(100):  # the page reconnects (retry 1 s); the router holds that request
        if len(streams) > 1:
            break
        page.wait_for_timeout(100)
    assert streams[1].request.headers["last-event-id"] == "1"
    streams[1].continue_()  # the real stream from here
    wait_status(page, "completed")
    assert page.is_hidden("#job-preview")
    assert len(preview_asked) == 1
