"""The per-request budget of the diffusion backends: one window at the native rate, a cap on tokens."""

from __future__ import annotations

import pytest

from kiss_core.errors import ClipTooLong, TokenBudgetExceeded
from kiss_core.generation.budget import check_request_budget, latent_tokens, max_seconds, request_budget
from kiss_core.schemas import VideoParams
from kiss_core.settings import GeneratorSettings

WAN = GeneratorSettings(backend="wan-i2v")


def test_the_default_clip_is_generated_as_wans_81_frames_at_16_fps_whatever_fps_is_asked() -> None:
    for fps in (8, 16, 24, 30):
        budget = check_request_budget(VideoParams(seconds=5.0, fps=fps, size="832x480"), WAN)
        assert budget is not None
        assert (budget.native_fps, budget.planned_frames, budget.generated_frames) == (16, 80, 81)
        assert (budget.latent_frames, budget.tokens) == (21, 32_760)  # 21 x 30 x 52


def test_tokens_follow_the_wan_latent_grid() -> None:
    assert latent_tokens(81, 832, 480) == 32_760
    assert latent_tokens(121, 832, 480) == 48_360  # 5 s at 24 fps, what native-rate generation avoids
    assert latent_tokens(81, 1280, 720) == 75_600 == GeneratorSettings().max_tokens
    assert latent_tokens(1, 160, 128) == 80


def test_a_clip_longer_than_one_window_is_refused_naming_the_limit() -> None:
    assert max_seconds(WAN) == 5.0
    refused = r"`seconds` 6 needs 97 frames .* native 16 fps, .* holds 81 \(5 s\)"
    with pytest.raises(ClipTooLong, match=refused):
        check_request_budget(VideoParams(seconds=6.0), WAN)
    assert ClipTooLong.code == "clip_too_long" and ClipTooLong.status == 422
    longer = WAN.model_copy(update={"max_frames": 161})
    assert check_request_budget(VideoParams(seconds=10.0), longer).generated_frames == 161  # type: ignore[union-attr]


def test_a_request_over_the_token_cap_is_refused_naming_the_numbers() -> None:
    big = VideoParams(seconds=5.0, size="1280x1280")
    refused = r"1280x1280 for 5 s is 134400 .*\(21 latent frames x 80 x 80\).* limit of 75600"
    with pytest.raises(TokenBudgetExceeded, match=refused):
        check_request_budget(big, WAN)
    assert check_request_budget(big, WAN.model_copy(update={"max_tokens": 134_400})) is not None
    assert TokenBudgetExceeded.code == "token_budget_exceeded" and TokenBudgetExceeded.status == 422


def test_the_request_backend_decides_and_preview_has_no_diffusion_budget() -> None:
    long_clip = VideoParams(seconds=10.0, size="1280x1280")
    assert check_request_budget(long_clip, GeneratorSettings()) is None  # preview: the CPU compositor
    with pytest.raises(ClipTooLong):
        check_request_budget(long_clip.model_copy(update={"backend": "wan-vace"}), GeneratorSettings())
    assert request_budget(long_clip, WAN, backend="preview") is None
    assert request_budget(VideoParams(seconds=1.5, fps=8), WAN).generated_frames == 25  # type: ignore[union-attr]


def test_max_frames_must_be_4k_plus_1() -> None:
    with pytest.raises(ValueError, match="`max_frames` must be 4k\\+1"):
        GeneratorSettings(max_frames=80)
