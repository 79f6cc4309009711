"""The studio's files without a browser: the committed style clips against a fresh render, the page's
markup and script against each other and the quality thresholds, the static route's refusals, the CSP,
and the packaging that ships them."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path, PurePosixPath

import pytest
from starlette.exceptions import HTTPException

from deployments.http import style_previews
from deployments.http.page import STATIC_DIR, content_security_policy, content_type, static_file
from kiss_core.generation.quality.thresholds import QualityThresholds
from kiss_core.media.video import probe_mp4
from kiss_core.settings import StorageSettings

REPO = Path(__file__).resolve().parents[2]
INDEX = (STATIC_DIR / "index.html").read_text()
SCRIPT = (STATIC_DIR / "studio.js").read_text()


def test_each_style_has_a_small_clip_shaped_like_a_fresh_render() -> None:
    fresh = probe_mp4(style_previews.render_style("peck"))
    assert (fresh["width"], fresh["height"]) == (192, 192)
    assert fresh["frames"] == round(style_previews.SECONDS * style_previews.FPS)
    for style in style_previews.STYLES:
        clip = (STATIC_DIR / "styles" / f"{style}.mp4").read_bytes()
        assert len(clip) < 64 * 1024, style  # a few KB each: the page loads all four
        stale = f"{style}.mp4 is stale: run python -m deployments.http.style_previews"
        assert probe_mp4(clip) == fresh, stale


def test_the_page_shows_the_quality_thresholds_the_service_uses() -> None:
    block = re.search(r"export const THRESHOLDS = \{(.*?)\};", SCRIPT, re.S)
    assert block is not None
    shown = {k: float(v) for k, v in re.findall(r"(\w+): ([\d.]+)", block[1])}
    assert shown == dataclasses.asdict(QualityThresholds())


def test_every_element_the_script_uses_is_in_the_page_once() -> None:
    ids = re.findall(r'\bid="([^"]+)"', INDEX)
    assert len(ids) == len(set(ids)), "duplicate ids in index.html"
    used = set(re.findall(r'\$\("([\w-]+)"\)', SCRIPT))
    used |= {f"{name}-{s}" for name in re.findall(r"\$\(`([\w-]+)-\$\{subject\}`\)", SCRIPT) for s in "ab"}
    assert used - set(ids) == set()


def test_the_markup_has_no_inline_script_or_style_and_no_other_origin() -> None:
    assert re.search(r"<script(?![^>]*\bsrc=)", INDEX) is None
    assert re.search(r"\sstyle=|<style|\son\w+=", INDEX) is None
    for text in (INDEX, SCRIPT, (STATIC_DIR / "studio.css").read_text()):
        assert re.search(r"https?://", text) is None  # every URL is relative to the service


def test_labels_name_every_form_control() -> None:
    labelled = set(re.findall(r'<label for="([\w-]+)"', INDEX))
    controls = re.findall(r'<(?:input|select|textarea)[^>]*\bid="([\w-]+)"', INDEX)
    assert controls and set(controls) - labelled == set()


@pytest.mark.parametrize(
    "path", ["../graph.py", "..%2fgraph.py", "styles/../../page.py", ".hidden", "index.html", "", "styles"]
)
def test_the_static_route_refuses_anything_but_a_shipped_file(path: str) -> None:
    with pytest.raises(HTTPException) as refused:
        static_file(path)
    assert refused.value.status_code == 404


def test_static_files_have_their_content_types() -> None:
    assert static_file("studio.js").name == "studio.js"
    assert content_type(static_file("studio.js")).startswith("text/javascript")
    assert content_type(static_file("studio.css")).startswith("text/css")
    assert content_type(static_file("styles/peck.mp4")) == "video/mp4"


def test_the_csp_allows_the_s3_server_only_when_downloads_redirect_there() -> None:
    local = content_security_policy(StorageSettings())
    assert "connect-src 'self';" in local and "http" not in local
    s3 = content_security_policy(
        StorageSettings(backend="s3", endpoint="minio:9000", public_endpoint="media.example.org", secure=True)
    )
    for directive in ("connect-src", "media-src", "img-src"):
        assert re.search(rf"{directive} [^;]*https://media\.example\.org(;|$)", s3), directive
    assert "script-src 'self';" in s3  # never a script from there


def test_a_non_editable_install_ships_every_static_file() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = config["deployments.http"]
    for file in STATIC_DIR.rglob("*"):
        if file.is_file():
            relative = PurePosixPath(file.relative_to(STATIC_DIR.parent).as_posix())
            # setuptools' globs: `*` stays within one directory
            shipped = [p for p in patterns if len(PurePosixPath(p).parts) == len(relative.parts)]
            assert any(relative.match(p) for p in shipped), relative
