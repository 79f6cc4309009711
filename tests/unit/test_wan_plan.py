"""What a Wan backend generates along: the plan at the native rate with the producer's camera, and the
latent frame its progress preview shows. No weights: the plan and a constructed latent tensor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kiss_core.generation.backends.wan import middle_video_latent, native_plan
from kiss_core.generation.budget import native_params
from kiss_core.scene.choreography import plan_kiss
from kiss_core.schemas import SubjectAnalysis, VideoParams
from kiss_core.settings import GeneratorSettings, Settings
from tests.support.studio import SyntheticStudio


@pytest.fixture(scope="module")
def analyses(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SubjectAnalysis]:
    studio = SyntheticStudio(Settings(), str(tmp_path_factory.mktemp("store")))
    return studio.pair(0, 1).analyses


@pytest.mark.parametrize("push_in", [0.0, 0.08, 0.2])
def test_the_native_plan_moves_the_camera_as_the_producer_plans_it(
    analyses: dict[str, SubjectAnalysis], push_in: float
) -> None:
    """The producer plans with generator.camera_push_in; a backend that planned with the default instead
    drew its pose video and lip tokens pushing in (up to 25.6 px off at 832x480 with the setting at 0)
    while the output check, the report and the flicker mask looked where the producer's plan put faces."""
    settings = GeneratorSettings(camera_push_in=push_in)
    params = VideoParams(style="romantic", seconds=5, size="832x480", fps=24)
    plan = native_plan(analyses, params, settings)
    producers = plan_kiss(analyses, native_params(params, settings), push_in)
    assert plan.fps == settings.native_fps
    assert (plan.camera is None) == (push_in == 0)
    for s in ("a", "b"):
        np.testing.assert_array_equal(plan.tracks[s].landmarks, producers.tracks[s].landmarks)
    if push_in == 0:
        moving = plan_kiss(analyses, native_params(params, settings))  # the default push-in
        drift = max(np.abs(moving.tracks[s].landmarks - plan.tracks[s].landmarks).max() for s in ("a", "b"))
        assert drift > 5.0  # what the setting was ignored by


def test_the_preview_shows_the_videos_middle_frame_not_a_reference_image() -> None:
    """VACE keeps one latent frame per reference image in front of the video's during the loop."""
    references, video = 4, 21
    latents = (
        torch.arange(references + video, dtype=torch.float32).reshape(1, 1, -1, 1, 1).expand(2, 16, -1, 3, 5)
    )
    middle = middle_video_latent(latents, references)
    assert middle.shape == (16, 3, 5)
    assert float(middle[0, 0, 0]) == references + video // 2  # frame 14, not 12 (the middle of all 25)
    assert float(middle_video_latent(latents[:, :, references:], 0)[0, 0, 0]) == video // 2 + references
    with pytest.raises(ValueError, match="cannot hold"):
        middle_video_latent(latents[:, :, :references], references)
