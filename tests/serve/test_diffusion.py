"""The diffusion backends through the real graph: tiny random-weight Wan pipelines in a model root, loaded
by the IdentityEncoder (text/image encoders) and the VideoGenerator (transformer, VAE, scheduler)
replicas from settings; one job per backend over HTTP. Subjects are synthetic composites."""

from __future__ import annotations

import io
from collections.abc import Iterator

import av
import httpx
import pytest

from kiss_core.faces.synthetic import synthetic_subject_png
from tests.conftest import graph_copy
from tests.serve.helpers import post_job, wait_terminal

pytestmark = pytest.mark.slow  # a second app with the tiny Wan models: ~23 s to start

APP = "kissgen_diffusion"
PARAMS = {"style": "peck", "seconds": 1.5, "fps": 8, "size": "160x128"}  # 12 frames (Wan makes 13)


@pytest.fixture(scope="module")
def diffusion_app(http_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.support.tiny_wan import build_model_root

    models = build_model_root(tmp_path_factory.mktemp("models"))
    settings = {
        "storage": {"backend": "local", "local_root": str(tmp_path_factory.mktemp("diffusion"))},
        "generator": {
            "model_root": str(models),
            "steps": 2,
            "backend": "wan-i2v",
            "progress_preview_every_steps": 1,
        },
    }
    with graph_copy(APP, "/diffusion", settings, http_port) as url:
        yield url


@pytest.mark.parametrize("backend", ["wan-i2v", "wan-vace"])
def test_a_job_on_each_diffusion_backend_completes_with_the_requested_frames(
    diffusion_app: str, backend: str
) -> None:
    with httpx.Client(base_url=diffusion_app, timeout=60) as client:
        response = post_job(
            client, synthetic_subject_png(0), synthetic_subject_png(1), backend=backend, **PARAMS
        )
        assert response.status_code == 202, response.text
        job = wait_terminal(client, response.headers["location"], timeout_s=120)
        assert job["status"] == "completed", job.get("error")
        assert job["params"]["backend"] == backend
        result = job["result"]
        assert (result["frames"], result["width"], result["height"]) == (12, 160, 128)
        content = client.get(f"/v1/videos/{job['id']}/content", follow_redirects=True)
        assert content.status_code == 200, content.text
    with av.open(io.BytesIO(content.content)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 12 and frames[0].shape == (128, 160, 3)


def test_a_diffusion_job_publishes_a_latent_progress_preview(diffusion_app: str) -> None:
    from PIL import Image

    with httpx.Client(base_url=diffusion_app, timeout=60) as client:
        response = post_job(client, synthetic_subject_png(0), synthetic_subject_png(1), **PARAMS)
        assert response.status_code == 202, response.text
        job = wait_terminal(client, response.headers["location"], timeout_s=120)
        assert job["status"] == "completed", job.get("error")
        preview = job["progress_preview"]
        assert preview is not None, "the tiny Wan (16 latent channels) made a preview while denoising"
        assert preview["url"] == f"/v1/videos/{job['id']}/content?variant=progress"
        assert 1 < preview["revision"] <= job["revision"]
        content = client.get(f"/v1/videos/{job['id']}/content", params={"variant": "progress"})
        assert content.status_code == 200 and content.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(content.content))
    image.load()
    # The latent grid (1/8 of the 160x128 frame) upscaled twice.
    assert image.mode == "RGB" and image.size == (40, 32)


def test_a_lora_that_is_not_installed_fails_the_job_with_backend_unavailable(diffusion_app: str) -> None:
    with httpx.Client(base_url=diffusion_app, timeout=60) as client:
        response = post_job(
            client, synthetic_subject_png(2), synthetic_subject_png(3), lora="no-such-lora", **PARAMS
        )
        assert response.status_code == 202, response.text
        job = wait_terminal(client, response.headers["location"], timeout_s=120)
    assert job["status"] == "failed" and job["error"]["code"] == "backend_unavailable"
    assert "no-such-lora" in job["error"]["detail"]


def test_each_diffusion_backend_has_its_own_generator_deployment(diffusion_app: str) -> None:
    """One 14B backend per GPU replica: the default backend's VideoGenerator (which also runs the preview)
    and VideoGenerator-wan-vace, each loading only its own weights; the jobs above were routed to them."""
    from ray import serve

    deployments = serve.status().applications[APP].deployments
    generators = sorted(name for name in deployments if name.startswith("VideoGenerator"))
    assert generators == ["VideoGenerator", "VideoGenerator-wan-vace"]
    assert all(deployments[name].replica_states.get("RUNNING", 0) == 1 for name in generators)
