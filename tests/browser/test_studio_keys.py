"""The studio where API keys are required, driven by keyboard only (photos aside: a file chooser is the
operating system's), on a copy of the graph under a route prefix (/keyed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import DESKTOP, Studio, require_browser
from tests.browser.flows import wait_until
from tests.conftest import KeyedApp

require_browser()

pytestmark = pytest.mark.slow


def active_id(page: Any) -> str:
    return page.evaluate("document.activeElement && document.activeElement.id")


def tab_to(page: Any, target: str, limit: int = 40) -> list[str]:
    """Press Tab until `target` has the focus; the ids of the elements the focus went through."""
    visited = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        visited.append(active_id(page))
        if visited[-1] == target:
            return visited
    raise AssertionError(f"Tab never reached #{target}; it went through {visited}")


def test_keys_are_asked_once_kept_in_the_tab_and_the_flow_works_by_keyboard(
    keyed_app: KeyedApp, studio_factory: Any, subject_files: dict[str, Path]
) -> None:
    studio: Studio = studio_factory(keyed_app.url, DESKTOP)
    page = studio.open()
    assert page.is_visible("#key-panel") and active_id(page) == "key-input"
    assert "kissgen keys new" in page.text_content("#key-help")

    page.keyboard.type("not-a-key")
    page.keyboard.press("Enter")
    page.wait_for_selector("#key-panel:visible")
    wait_until(page, "() => document.querySelector('#key-why').textContent.includes('did not accept')")

    page.keyboard.type(keyed_app.keys["globex"])
    page.keyboard.press("Enter")
    page.wait_for_selector("#videos-empty:visible")  # the list loaded with the key
    assert page.is_hidden("#key-panel")
    storage = page.evaluate(
        "({session: {...sessionStorage}, local: {...localStorage}, cookie: document.cookie})"
    )
    assert storage == {"session": {"kissgen.apiKey": keyed_app.keys["globex"]}, "local": {}, "cookie": ""}

    page.set_input_files("#photo-a", str(subject_files["a"]))
    page.set_input_files("#photo-b", str(subject_files["b"]))
    for subject in ("a", "b"):
        page.wait_for_selector(f"#overlay-{subject}[data-landmarks='68']", state="visible")

    # Keyboard only from here, in the page's order: each photo's Remove button, consent A, B, style,
    # length, advanced, submit.
    page.focus("#photo-a")
    assert tab_to(page, "consent-a") == ["remove-a-1", "consent-a"]
    assert page.get_attribute("#remove-a-1", "aria-label") == "Remove photo 1 of person A (a.png)"
    page.keyboard.press("Space")
    assert tab_to(page, "consent-b") == ["consent-ref-a", "photo-b", "remove-b-1", "consent-b"]
    page.keyboard.press("Space")
    assert tab_to(page, "style-romantic") == ["consent-ref-b", "style-romantic"]
    page.keyboard.press("ArrowRight")
    assert page.is_checked("#style-french")
    assert tab_to(page, "seconds") == ["intensity", "seconds"]
    page.keyboard.press("Control+A")
    page.keyboard.type("2")
    tab_to(page, "")  # the Advanced summary has no id
    page.keyboard.press("Enter")
    assert tab_to(page, "size") == ["size"]
    page.keyboard.type("416x240")
    page.keyboard.press("Tab")
    page.keyboard.type("12")
    tab_to(page, "submit")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # the focus is visible
    page.keyboard.press("Enter")

    page.wait_for_selector("#job[data-status=completed]", state="attached", timeout=120_000)
    page.wait_for_selector("#result[data-loaded=true]", state="attached")  # downloads sent the key too
    assert studio.stats()["events"] >= 2
    job = page.evaluate("document.querySelector('#job-id').textContent")
    params = page.evaluate(
        "async (id) => (await (await fetch(`/keyed/v1/videos/${id}`, "
        "{headers: {'X-API-Key': sessionStorage.getItem('kissgen.apiKey')}})).json()).params",
        job,
    )
    assert (params["style"], params["seconds"], params["size"], params["fps"]) == ("french", 2, "416x240", 12)
    assert studio.outside_requests() == []
