"""The studio on S3 storage (SeaweedFS): downloads redirect to presigned URLs on the S3 server, which
the page's CSP allows (and only that origin besides the service's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.browser.conftest import DESKTOP, Studio, require_browser
from tests.browser.flows import submit_tiny_job, wait_status, wait_until
from tests.conftest import graph_copy
from tests.support.s3server import S3Endpoint

require_browser()

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3_studio(http_port: int, s3_server: S3Endpoint) -> Iterator[str]:
    storage = s3_server.settings(bucket="kissgen-studio").model_dump(mode="json")
    with graph_copy("kissgen_s3_studio", "/s3studio", {"storage": storage}, http_port) as url:
        yield url


def test_results_stored_on_s3_play_through_presigned_urls_the_csp_allows(
    s3_studio: str, s3_server: S3Endpoint, studio_factory: Any, subject_files: dict[str, Path]
) -> None:
    s3_origin = f"http://{s3_server.endpoint}"
    csp = httpx.get(s3_studio + "/", timeout=10).headers["content-security-policy"]
    for directive in ("connect-src", "media-src", "img-src"):
        assert f"{s3_origin}" in next(d for d in csp.split(";") if d.strip().startswith(directive))

    studio: Studio = studio_factory(s3_studio, DESKTOP)
    page = studio.open()
    video_id = submit_tiny_job(page, subject_files)
    wait_status(page, "completed")
    page.wait_for_selector("#result[data-loaded=true]", state="attached")
    wait_until(page, "() => document.querySelector('#result-video').readyState >= 3")
    from_s3 = [u for u in studio.outside_requests() if u.startswith(s3_origin + "/")]
    assert from_s3 and all(f"/outputs/{video_id}/" in urlsplit(u).path for u in from_s3), from_s3
    assert [u for u in studio.outside_requests() if u not in from_s3] == []
