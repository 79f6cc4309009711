"""Several photos of each person in the studio (Chromium via Playwright, the real Serve application): the
picker adds up to `limits.max_photos_per_subject` photos, each checked and removable, every accepted one
is sent as one more subject_a / subject_b part in the order shown, and the service's refusals of a
person's photos (subject_photos_mismatch, too_many_photos) are shown next to that person.

Synthetic subjects only (kiss_core.faces.synthetic: faces of nobody); another photo of one is the same
face mirrored or slightly rotated, a stranger is another synthetic subject. scikit-image's coffee photo
(no face) is only analysed and refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from kiss_core.jobs.audit import AuditLog
from kiss_core.storage import LocalDirStore
from tests.browser.conftest import DESKTOP, Studio, require_browser
from tests.browser.flows import fill_small_job, job_id, wait_status, wait_until
from tests.conftest import ServeApp
from tests.support.photos import skimage_path

require_browser()

pytestmark = pytest.mark.slow


def add_photos(page: Any, subject: str, *paths: Path) -> None:
    """Choose `paths` at once in the person's file picker (it takes several)."""
    page.set_input_files(f"#photo-{subject}", [str(p) for p in paths])


def wait_checked(page: Any, subject: str, count: int) -> list[str]:
    """Wait until the person has `count` thumbnails and none is being checked; their states in order."""
    return wait_until(
        page,
        """([subject, count]) => {
            const items = [...document.querySelectorAll(`#thumbs-${subject} li`)];
            const states = items.map((item) => item.dataset.state);
            return items.length === count && !states.includes("checking") && states;
        }""",
        [subject, count],
    )


def thumb_lines(page: Any, subject: str) -> list[str]:
    return page.eval_on_selector_all(
        f"#thumbs-{subject} .thumb-state", "lines => lines.map(l => l.textContent)"
    )


def active(page: Any) -> dict[str, str]:
    return page.evaluate(
        "({id: document.activeElement.id, label: document.activeElement.getAttribute('aria-label')})"
    )


def consent_both(page: Any) -> None:
    page.check("#consent-a")
    page.check("#consent-b")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def audited_photos(serve_app: ServeApp, video_id: str) -> dict[str, list[str]]:
    """The SHA-256 of every photo of each person, in the order sent, from the job's audit record."""
    (record,) = AuditLog(LocalDirStore(serve_app.store_root)).for_job(video_id)
    return record.photos_sha256


def stored(serve_app: ServeApp) -> set[str]:
    return set(LocalDirStore(serve_app.store_root).list(""))


def record_form_parts(page: Any) -> None:
    """Keep the file parts of every FormData the page sends, as [field, file name], in window.sentParts.
    (Chromium gives Playwright no body for a request with files in it, so they are read in the page.)"""
    page.evaluate(
        """() => {
            const send = window.fetch;
            window.sentParts = [];
            window.fetch = (url, options = {}) => {
                if (options.body instanceof FormData) {
                    const files = [...options.body.entries()].filter(([, value]) => value instanceof File);
                    const parts = files.map(([name, file]) => [name, file.name]);
                    window.sentParts.push({url: String(url), parts});
                }
                return send(url, options);
            };
        }"""
    )


def video_parts(page: Any) -> list[list[str]]:
    """The file parts of the page's POST /v1/videos requests since record_form_parts."""
    sent = page.evaluate("window.sentParts")
    return [s["parts"] for s in sent if s["url"].endswith("/v1/videos")]


def test_two_photos_of_one_person_and_one_of_the_other_make_a_video_from_all_three(
    serve_app: ServeApp, studio_factory: Any, photo_files: dict[str, Path]
) -> None:
    studio: Studio = studio_factory(serve_app.url, DESKTOP)
    page = studio.open()
    assert page.get_attribute("#photo-a", "multiple") is not None  # the service takes 3 of each
    assert "Up to 3 photos" in page.text_content("#photos-hint-a")
    assert "likeness" in page.text_content("#photos-hint-a")

    add_photos(page, "a", photo_files["a.png"])
    add_photos(page, "a", photo_files["a-mirrored.png"])  # a second pick adds to the first
    add_photos(page, "b", photo_files["b.png"])
    assert wait_checked(page, "a", 2) == ["ok", "ok"]
    assert wait_checked(page, "b", 1) == ["ok"]
    assert page.get_attribute("#overlay-a", "data-landmarks") == "68"  # the first photo, large
    assert page.eval_on_selector_all("#thumbs-a canvas", "cs => cs.map(c => c.dataset.landmarks)") == [
        "68",
        "68",
    ]
    assert page.get_attribute("#analysis-a", "data-state") == "ok"
    assert "each of the 2 photos" in page.text_content("#analysis-a")
    assert "(2 chosen)" in page.text_content("#photos-hint-a")
    consent_both(page)
    fill_small_job(page, seconds=1, size="128x128", fps=8)

    record_form_parts(page)
    page.click("#submit")
    wait_status(page, "completed")
    expected = [["subject_a", "a.png"], ["subject_a", "a-mirrored.png"], ["subject_b", "b.png"]]
    assert video_parts(page) == [expected]  # the request carried 2 + 1 photos, in the order shown
    sent = audited_photos(serve_app, job_id(page))
    assert sent == {
        "a": [sha256(photo_files["a.png"]), sha256(photo_files["a-mirrored.png"])],
        "b": [sha256(photo_files["b.png"])],
    }
    assert studio.outside_requests() == []


def test_a_removed_photo_is_not_sent_and_the_focus_moves_to_the_next_one(
    serve_app: ServeApp, studio_factory: Any, photo_files: dict[str, Path]
) -> None:
    studio: Studio = studio_factory(serve_app.url, DESKTOP)
    page = studio.open()
    coffee = skimage_path("coffee.png")  # no face: refused
    add_photos(page, "a", photo_files["a.png"], coffee, photo_files["a-mirrored.png"])
    add_photos(page, "b", photo_files["b.png"], photo_files["b-mirrored.png"])
    assert wait_checked(page, "a", 3) == ["ok", "bad", "ok"]
    assert wait_checked(page, "b", 2) == ["ok", "ok"]
    assert page.get_attribute("#overlay-a", "data-landmarks") == "68"  # the first usable photo, large
    assert "Photo 2: No face was found" in page.text_content("#analysis-a")
    assert page.get_attribute("#analysis-a", "data-state") == "bad"
    consent_both(page)
    assert page.locator("#submit").is_disabled()  # a refused photo is neither sent nor ignored
    assert "photo 2 of person A cannot be used: remove it" in page.text_content("#submit-hint")

    # By keyboard: the refused photo's Remove button; the focus goes to the photo that took its place.
    remove = page.locator("#thumbs-a li").nth(1).locator("button")
    assert remove.get_attribute("aria-label") == "Remove photo 2 of person A (coffee.png)"
    remove.focus()
    page.keyboard.press("Enter")
    assert wait_checked(page, "a", 2) == ["ok", "ok"]
    assert active(page)["label"] == "Remove photo 2 of person A (a-mirrored.png)"
    assert "Photo 2 (coffee.png) was removed." in page.text_content("#analysis-a")  # the live region says so
    assert thumb_lines(page, "a") == ["Photo 1: Can be used.", "Photo 2: Can be used."]

    # A usable photo removed: the last one, so the focus goes to the one before it.
    page.locator("#thumbs-b li").nth(1).locator("button").click()
    assert wait_checked(page, "b", 1) == ["ok"]
    assert active(page)["label"] == "Remove photo 1 of person B (b.png)"
    page.keyboard.press("Enter")  # and the last photo of a person: the focus goes to the picker
    assert active(page)["id"] == "photo-b"
    assert page.is_hidden("#overlay-b") and page.is_hidden("#thumbs-b")
    assert "choose a photo of person B" in page.text_content("#submit-hint")
    add_photos(page, "b", photo_files["b.png"])  # the same file again, after it was removed
    assert wait_checked(page, "b", 1) == ["ok"]

    fill_small_job(page, seconds=1, size="128x128", fps=8)
    record_form_parts(page)
    page.click("#submit")
    wait_status(page, "completed")
    assert video_parts(page) == [
        [["subject_a", "a.png"], ["subject_a", "a-mirrored.png"], ["subject_b", "b.png"]]
    ]
    assert audited_photos(serve_app, job_id(page)) == {
        "a": [sha256(photo_files["a.png"]), sha256(photo_files["a-mirrored.png"])],
        "b": [sha256(photo_files["b.png"])],
    }


def test_photos_of_two_people_for_one_person_are_named_next_to_that_person_and_nothing_is_made(
    serve_app: ServeApp, studio_factory: Any, photo_files: dict[str, Path]
) -> None:
    studio: Studio = studio_factory(serve_app.url, DESKTOP)
    page = studio.open()
    before = stored(serve_app)
    add_photos(page, "a", photo_files["a.png"], photo_files["stranger.png"], photo_files["a-rotated.png"])
    add_photos(page, "b", photo_files["b.png"])
    assert wait_checked(page, "a", 3) == ["ok", "ok", "ok"]  # each photo alone is a usable face
    wait_checked(page, "b", 1)
    consent_both(page)
    with page.expect_response(
        lambda r: r.url.endswith("/v1/videos") and r.request.method == "POST"
    ) as answer:
        page.click("#submit")
    problem = answer.value.json()
    assert (answer.value.status, problem["code"], problem["subject"]) == (422, "subject_photos_mismatch", "a")

    page.wait_for_selector("#analysis-a[data-state=bad]")
    said = page.text_content("#analysis-a")
    assert "Photo 2 (stranger.png) does not look like the same person as the other photos of person A" in said
    assert wait_checked(page, "a", 3) == ["ok", "bad", "ok"]  # only the odd one is marked
    assert thumb_lines(page, "a")[1] == "Photo 2: Does not look like the other photos."
    assert page.get_attribute("#analysis-b", "data-state") == "ok"  # person B is not blamed
    assert page.text_content("#submit-hint").startswith("Not sent: Person A:")
    assert page.locator("#submit").is_disabled()  # the same photos would be refused again
    assert stored(serve_app) == before, "no input, audit record or job was written"
    assert all(not u.endswith("/events") for u in studio.requests)

    # Two photos, one pair: both are named.
    page.locator("#thumbs-a li").nth(2).locator("button").click()
    assert wait_checked(page, "a", 2) == ["ok", "ok"]
    assert page.locator("#submit").is_enabled()  # a change of the photos clears the refusal
    page.click("#submit")
    page.wait_for_selector("#analysis-a[data-state=bad]")
    said = page.text_content("#analysis-a")
    assert "photo 1 (a.png) and photo 2 (stranger.png)" in said, said
    assert wait_checked(page, "a", 2) == ["bad", "bad"]
    assert stored(serve_app) == before
    assert studio.outside_requests() == []


def test_the_picker_adds_no_more_photos_than_the_service_takes_and_says_so(
    serve_app: ServeApp, studio_factory: Any, photo_files: dict[str, Path]
) -> None:
    studio: Studio = studio_factory(serve_app.url, DESKTOP)
    page = studio.open()
    four = [photo_files[n] for n in ("b.png", "b-mirrored.png", "b-rotated.png", "b-tilted.png")]
    add_photos(page, "b", *four)
    assert wait_checked(page, "b", 3) == ["ok", "ok", "ok"]
    said = page.text_content("#analysis-b")
    assert "Person B has 3 photos, the most the service takes: 1 photo was not added." in said, said
    assert "(3 chosen)" in page.text_content("#photos-hint-b")
    add_photos(page, "a", photo_files["a.png"], photo_files["a.png"])  # the same file twice
    assert wait_checked(page, "a", 1) == ["ok"]
    assert "a.png is already among the photos of person A." in page.text_content("#analysis-a")
    add_photos(page, "b", photo_files["stranger.png"])  # a later pick, when full
    assert wait_checked(page, "b", 3) == ["ok", "ok", "ok"]
    assert "1 photo was not added" in page.text_content("#analysis-b")
    consent_both(page)
    assert page.locator("#submit").is_enabled()


def test_too_many_photos_from_the_service_is_shown_next_to_that_person(
    serve_app: ServeApp, studio_factory: Any, photo_files: dict[str, Path]
) -> None:
    """A service whose limit fell below what the page was told (here: the capabilities say 4, the service
    takes 3) refuses the fourth photo with too_many_photos: the page says so next to that person, learns
    the limit from the refusal and waits for a photo to be removed."""

    def four_photos(route: Any) -> None:
        capabilities = route.fetch().json()
        capabilities["limits"]["max_photos_per_subject"] = 4
        route.fulfill(status=200, content_type="application/json", body=json.dumps(capabilities))

    studio: Studio = studio_factory(serve_app.url, DESKTOP)
    studio.page.route("**/v1/capabilities", four_photos)
    page = studio.open()
    before = stored(serve_app)
    four = [photo_files[n] for n in ("b.png", "b-mirrored.png", "b-rotated.png", "b-tilted.png")]
    add_photos(page, "b", *four)
    add_photos(page, "a", photo_files["a.png"])
    assert wait_checked(page, "b", 4) == ["ok"] * 4
    wait_checked(page, "a", 1)
    consent_both(page)
    with page.expect_response(
        lambda r: r.url.endswith("/v1/videos") and r.request.method == "POST"
    ) as answer:
        page.click("#submit")
    assert (answer.value.status, answer.value.json()["code"]) == (422, "too_many_photos")

    page.wait_for_selector("#analysis-b[data-state=bad]")
    assert "The service takes at most 3 photos of person B: remove 1." in page.text_content("#analysis-b")
    assert wait_checked(page, "b", 4) == ["ok", "ok", "ok", "bad"]
    assert "Up to 3 photos" in page.text_content("#photos-hint-b")
    assert page.get_attribute("#analysis-a", "data-state") == "ok"
    assert page.locator("#submit").is_disabled()
    page.locator("#thumbs-b li").nth(3).locator("button").click()
    assert wait_checked(page, "b", 3) == ["ok", "ok", "ok"]
    assert page.locator("#submit").is_enabled()
    assert stored(serve_app) == before
