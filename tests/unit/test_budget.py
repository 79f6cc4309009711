"""The per-request budget of the diffusion backends: one window at the native rate, a cap on tokens, the
reference images of wan-vace (one per photo) counted with the video's."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path

import pytest

from kiss_core.errors import ClipTooLong, TokenBudgetExceeded, TooManyPhotos
from kiss_core.faces.synthetic import synthetic_subject
from kiss_core.generation.backends.weights import BACKEND_SPECS, DIFFUSION_BACKENDS
from kiss_core.generation.budget import check_request_budget, latent_tokens, max_seconds, request_budget
from kiss_core.jobs.admission import JobAdmission
from kiss_core.jobs.stages import InProcessStages
from kiss_core.jobs.store import JobStore
from kiss_core.media.images import encode_png
from kiss_core.schemas import Attestation, SubjectConsent, VideoParams
from kiss_core.settings import GeneratorSettings, Settings
from kiss_core.storage import LocalDirStore
from tests.support.photo_variants import brighter, mirrored, rotated

WAN = GeneratorSettings(backend="wan-i2v")
ATTESTED = Attestation(a=SubjectConsent(consented=True), b=SubjectConsent(consented=True))
# 832x480 for 5 s: 21 x 30 x 52 = 32,760 video tokens, each reference image 30 x 52 = 1,560 more. Under
# 40,000 with one photo of each person (+ 3,120) or two (+ 6,240), over it with three of each (+ 9,360).
CLIP = VideoParams(style="peck", seconds=5.0, size="832x480")
TIGHT = GeneratorSettings(max_tokens=40_000)


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


def test_wan_vace_is_the_backend_whose_reference_images_are_tokens() -> None:
    assert [b for b in DIFFUSION_BACKENDS if BACKEND_SPECS[b].reference_images] == ["wan-vace"]


def test_each_reference_image_is_one_more_latent_frame_on_wan_vace_only() -> None:
    vace = request_budget(CLIP, WAN, backend="wan-vace", references=6)
    assert vace is not None
    assert (vace.latent_frames, vace.reference_frames, vace.tokens) == (21, 6, 42_120)  # (21 + 6) x 30 x 52
    assert vace.tokens == latent_tokens(81, 832, 480) + 6 * 30 * 52
    i2v = request_budget(CLIP, WAN, backend="wan-i2v", references=6)  # the start image is not a reference
    assert i2v is not None and (i2v.reference_frames, i2v.tokens) == (0, 32_760)
    assert request_budget(CLIP, WAN, backend="wan-vace") == request_budget(CLIP, WAN, "wan-vace", 0)
    assert request_budget(CLIP, WAN, backend="preview", references=6) is None
    with pytest.raises(ValueError, match="`references` must be >= 0 but is -1"):
        request_budget(CLIP, WAN, backend="wan-vace", references=-1)


def test_reference_images_that_tip_a_request_over_the_cap_are_named() -> None:
    vace = CLIP.model_copy(update={"backend": "wan-vace"})
    assert check_request_budget(vace, TIGHT, references=4) is not None  # 32,760 + 6,240 = 39,000
    refused = (
        r"832x480 for 5 s is 42120 transformer tokens \(21 latent frames x 30 x 52 = 32760, \+ 6 reference"
        r" images x 30 x 52 = 9360\) on wan-vace, over the limit of 40000; the video alone fits; each photo"
        r" is one reference image on wan-vace: send fewer photos"
    )
    with pytest.raises(TokenBudgetExceeded, match=refused):
        check_request_budget(vace, TIGHT, references=6)
    big = vace.model_copy(update={"size": "1280x1280"})  # the video alone is over: no word of fewer photos
    with pytest.raises(TokenBudgetExceeded, match=r"= 134400, \+ 2 reference images .* a shorter clip$"):
        check_request_budget(big, WAN, references=2)
    assert check_request_budget(CLIP.model_copy(update={"backend": "wan-i2v"}), TIGHT, references=6)


@pytest.fixture(scope="module")
def three_each() -> dict[str, list[bytes]]:
    """Three photos of synthetic subject 0 and three of subject 1 (each the face, mirrored, rotated)."""
    faces = {"a": synthetic_subject(0), "b": synthetic_subject(1)}
    return {s: [encode_png(f), encode_png(mirrored(f)), encode_png(rotated(f))] for s, f in faces.items()}


@pytest.fixture
def admission(tmp_path: Path) -> JobAdmission:
    """A real admission on a local store, its diffusion budget TIGHT (the stages only analyse photos)."""
    store = LocalDirStore(tmp_path)
    settings = Settings()
    stages = InProcessStages(settings, store)
    return JobAdmission(JobStore(store), stages, settings.limits, generator=TIGHT, faces=settings.faces)


def test_admission_counts_every_photo_as_a_reference_image_on_wan_vace(
    admission: JobAdmission, three_each: dict[str, list[bytes]]
) -> None:
    """1 + 1 photos fit on wan-vace, 3 + 3 do not: refused before analysis, nothing stored. The same
    3 + 3 are accepted on wan-i2v (no reference images) and on the preview backend (no diffusion)."""
    vace = CLIP.model_copy(update={"backend": "wan-vace"})
    one_each = {s: photos[0] for s, photos in three_each.items()}
    assert asyncio.run(admission.submit(vace, one_each, ATTESTED)).status == "queued"
    stored = set(admission.jobs.store.list(""))

    with pytest.raises(TokenBudgetExceeded) as refused:
        asyncio.run(admission.submit(vace, three_each, ATTESTED))
    assert refused.value.status == 422 and refused.value.code == "token_budget_exceeded"
    assert "42120 transformer tokens" in refused.value.detail
    assert "+ 6 reference images x 30 x 52 = 9360" in refused.value.detail
    assert "send fewer photos" in refused.value.detail
    assert set(admission.jobs.store.list("")) == stored, "no input, no audit record, no job"

    for backend in ("wan-i2v", "preview"):
        params = CLIP.model_copy(update={"backend": backend})
        assert asyncio.run(admission.submit(params, three_each, ATTESTED)).status == "queued", backend


def test_too_many_photos_is_the_answer_before_the_token_budget(
    admission: JobAdmission, three_each: dict[str, list[bytes]]
) -> None:
    """Four photos of a person is refused as such (the limit is 3), not as the tokens they would cost."""
    four = {**three_each, "a": [*three_each["a"], encode_png(brighter(synthetic_subject(0)))]}
    with pytest.raises(TooManyPhotos, match="subject_a has 4 photos") as refused:
        asyncio.run(admission.submit(CLIP.model_copy(update={"backend": "wan-vace"}), four, ATTESTED))
    problem = refused.value.to_problem()
    assert problem["limit"] == 3 and problem["subject"] == "a"
    again = pickle.loads(pickle.dumps(refused.value))  # as it crosses a Ray call
    assert again.to_problem() == problem
