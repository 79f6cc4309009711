"""The invisible watermark: the job id comes back from frames, after x264 at crf 20 and again at crf 35.

Frames are natural pictures without people (tests.support.clips): a cup moving over a still backdrop.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kiss_core.generation.backends.preview import PreviewFrames
from kiss_core.generation.conditioning import Conditioning
from kiss_core.generation.provenance.watermark import (
    PAYLOAD_BITS,
    WatermarkEmbedder,
    bit_scores,
    decode_scores,
    extract_job_id,
    find_job_id,
    job_id_payload,
    read_frame_ids,
    read_video_watermark,
)
from kiss_core.media.video import decode_mp4, encode_mp4
from kiss_core.scene.camera import TUNED_PUSH_IN, apply_camera
from kiss_core.scene.choreography import plan_kiss
from kiss_core.schemas import VideoParams
from kiss_core.settings import Settings
from tests.support.clips import _picture, moving_clip
from tests.support.studio import SyntheticPair, SyntheticStudio

JOB = "video_5f1c0a9e2b7d4c3a8e6f0b1d"
OTHER = "video_00000000000000000000ffff"


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    return moving_clip(48)


@pytest.fixture(scope="module")
def marked(clip: list[np.ndarray]) -> list[np.ndarray]:
    embedder = WatermarkEmbedder(JOB)
    frames = [frame.copy() for frame in clip]
    for frame in frames:
        embedder.apply(frame)
    return frames


@pytest.fixture(scope="module")
def marked_mp4(marked: list[np.ndarray]) -> bytes:
    """What the service delivers: the marked clip at the service's default quality (crf 20)."""
    return encode_mp4(marked, 24, crf=20)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def test_payload_is_the_id_and_its_crc() -> None:
    bits = job_id_payload(JOB)
    assert bits.shape == (PAYLOAD_BITS,) and set(np.unique(bits)) <= {0, 1}
    assert np.packbits(bits[:96]).tobytes().hex() == JOB.removeprefix("video_")
    scores = bits.astype(np.float64) * 2 - 1
    assert decode_scores(scores) == JOB
    # Up to the Chase budget, weak wrong bits are repaired; a confident wrong bit is not.
    weak = scores.copy()
    weak[[3, 40, 77, 100]] *= -0.1
    assert decode_scores(weak) == JOB
    strong = scores.copy()
    strong[60:70] *= 0.5  # ten bits less certain than the wrong one
    strong[5] *= -1
    assert decode_scores(strong) is None
    for bad in ("5f1c0a9e2b7d4c3a8e6f0b1d", "video_5F1C0A9E2B7D4C3A8E6F0B1D", "video_123"):
        with pytest.raises(ValueError, match="job_id"):
            job_id_payload(bad)


def test_marking_is_invisible(clip: list[np.ndarray], marked: list[np.ndarray]) -> None:
    values = [psnr(a, b) for a, b in zip(clip, marked, strict=True)]
    assert min(values) >= 38.0
    assert 39.0 <= np.mean(values) <= 41.0  # strength 2.5 grey levels, a few bits boosted
    # No pixel moves by more than a boosted bit's amplitude (2 x 2.5, dithered to whole levels).
    assert (
        max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(clip, marked, strict=True)) <= 5
    )
    # Luma only: the three channels move together.
    diff = marked[0].astype(int) - clip[0].astype(int)
    unclipped = (clip[0] > 5).all(axis=2) & (clip[0] < 250).all(axis=2)
    assert (diff[unclipped, 0] == diff[unclipped, 1]).all() and (
        diff[unclipped, 1] == diff[unclipped, 2]
    ).all()


def test_bits_the_picture_opposes_are_boosted(clip: list[np.ndarray]) -> None:
    """Informed embedding: without it the weakest bit keeps ~10 % of the typical margin, with it >25 %."""
    truth = job_id_payload(JOB) * 2.0 - 1
    margins = {}
    for adapt_every in (12, 0):
        frame = clip[0].copy()
        WatermarkEmbedder(JOB, adapt_every=adapt_every).apply(frame)
        margin = bit_scores(frame) * truth
        margins[adapt_every] = margin.min() / np.median(margin)
    assert margins[12] > 0.25 > margins[0] > 0
    amplitudes = WatermarkEmbedder(JOB).amplitudes(clip[0])
    assert amplitudes.min() == pytest.approx(2.5) and amplitudes.max() <= 5.0
    assert 0 < (amplitudes > 2.5).sum() < 32  # a few bits, not all


def test_frames_read_back_exactly(clip: list[np.ndarray], marked: list[np.ndarray]) -> None:
    assert all(extract_job_id(frame) == JOB for frame in marked)
    assert all(extract_job_id(frame) is None for frame in clip)
    other = clip[7].copy()
    WatermarkEmbedder(OTHER).apply(other)
    assert extract_job_id(other) == OTHER


def test_survives_reencoding_at_lower_quality(marked_mp4: bytes) -> None:
    frames, fps = decode_mp4(marked_mp4)
    reencoded = encode_mp4(list(frames), int(fps), crf=35)
    assert len(reencoded) < len(marked_mp4) / 3  # really a much lower quality
    reading = read_video_watermark(reencoded, max_frames=48)
    assert reading.job_id == JOB
    assert reading.frames_checked == 48
    assert reading.frames_matching / reading.frames_checked >= 0.9
    assert reading.frames_other == 0


def test_unmarked_video_reads_none(clip: list[np.ndarray]) -> None:
    reading = read_video_watermark(encode_mp4(clip, 24, crf=20), max_frames=16)
    assert reading.job_id is None
    assert reading.frames_checked == 16 and reading.frames_matching == 0 and reading.frames_other == 0


def test_rescaled_video_is_read_at_its_marked_size(marked_mp4: bytes) -> None:
    frames, fps = decode_mp4(marked_mp4)
    small = [cv2.resize(frame, (416, 240), interpolation=cv2.INTER_AREA) for frame in frames]
    reading = read_video_watermark(encode_mp4(small, int(fps), crf=23), max_frames=12)
    assert reading.job_id == JOB and reading.marked_size == "832x480"
    assert reading.frames_matching >= 11


def test_cropped_frame_does_not_read(marked: list[np.ndarray]) -> None:
    """A crop shifts the cell grid: the mark is lost (documented), and nothing wrong is reported."""
    assert extract_job_id(np.ascontiguousarray(marked[0][:, 3:803])) is None


def test_non_contiguous_frames_are_marked_in_place(clip: list[np.ndarray]) -> None:
    canvas = np.zeros((480, 900, 3), np.uint8)
    canvas[:, :832] = clip[0]
    view = canvas[:, :832]
    WatermarkEmbedder(JOB).apply(view)
    assert extract_job_id(canvas[:, :832]) == JOB
    assert not canvas[:, 832:].any()


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="strength"):
        WatermarkEmbedder(JOB, strength=20)
    with pytest.raises(ValueError, match="adapt_every"):
        WatermarkEmbedder(JOB, adapt_every=-1)
    with pytest.raises(ValueError, match="RGB uint8"):
        WatermarkEmbedder(JOB).apply(np.zeros((480, 832), np.uint8))
    assert extract_job_id(np.zeros((64, 64, 3), np.uint8)) is None  # too small to carry the mark


# --- camera moves: the preview's push-in, a pan, and what a pan over texture does --------------------


def reread_at_crf_35(frames: list[np.ndarray], job_id: str = JOB) -> tuple[list[str | None], list[bool]]:
    """Mark the frames, encode them as the service does (crf 20), re-encode at crf 35, read every frame."""
    embedder = WatermarkEmbedder(job_id)
    marked = [frame.copy() for frame in frames]
    for frame in marked:
        embedder.apply(frame)
    delivered, fps = decode_mp4(encode_mp4(marked, 24, crf=20))
    worse, _ = decode_mp4(encode_mp4(list(delivered), int(fps), crf=35))
    ids = read_frame_ids(list(worse))
    return ids, [i == job_id for i in ids]


def pan(frames: list[np.ndarray], px_per_frame: float, zoom: float = 1.1) -> list[np.ndarray]:
    """A camera pan over finished frames: zoomed in a little so the window can slide, left to right."""
    height, width = frames[0].shape[:2]
    travel = px_per_frame * (len(frames) - 1)
    assert travel <= width * (zoom - 1), "the pan would leave the picture"
    out = []
    for t, frame in enumerate(frames):
        shift = width / 2 * (1 - zoom) + travel / 2 - px_per_frame * t
        camera = np.array([[zoom, 0, shift], [0, zoom, height / 2 * (1 - zoom)]])
        out.append(apply_camera(frame, camera))
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> SyntheticPair:
    """Two synthetic subjects (composites, nobody real), analysed as the service does."""
    return SyntheticStudio(Settings(), str(tmp_path_factory.mktemp("studio"))).pair(0, 1)


def preview(pair: SyntheticPair, params: VideoParams, push_in: float) -> list[np.ndarray]:
    plan = plan_kiss(pair.analyses, params, push_in)
    return list(
        PreviewFrames().frames(plan, pair.photos, pair.analyses, Conditioning(), params, lambda share: None)
    )


@pytest.mark.slow
def test_survives_the_preview_camera_push_in_at_crf_35(pair: SyntheticPair) -> None:
    """The preview with its camera pushing in (as tuned, 8 %), 3 s: every frame, re-encoded at crf 35."""
    params = VideoParams(style="romantic", seconds=3, fps=24, size="832x480")
    frames = preview(pair, params, TUNED_PUSH_IN)
    still = preview(pair, params, 0.0)
    assert np.abs(frames[-1].astype(int) - still[-1].astype(int)).mean() > 3  # the camera did move in
    ids, exact = reread_at_crf_35(frames)
    assert np.mean(exact) >= 0.9, "".join(".x"[not e] for e in exact)
    assert set(ids) <= {JOB, None}


def test_survives_a_pan_of_the_preview_at_crf_35(pair: SyntheticPair) -> None:
    """0.5 px a frame across a 3 s preview (a camera pan a diffusion backend might make)."""
    params = VideoParams(style="peck", seconds=3, fps=24, size="832x480")
    frames = pan(preview(pair, params, 0.0), 0.5)
    ids, exact = reread_at_crf_35(frames)
    assert np.mean(exact) >= 0.9, "".join(".x"[not e] for e in exact)
    assert set(ids) <= {JOB, None}


def textured_pan(frames: int = 72, dx: float = 0.5, dy: float = 0.0) -> list[np.ndarray]:
    """A natural picture (a cat's fur: texture everywhere) panned by (dx, dy) px a frame."""
    backdrop = _picture("chelsea.png", 832 + 64, 480 + 48)
    return [
        cv2.warpAffine(
            backdrop, np.float32([[1, 0, -dx * t], [0, 1, -dy * t]]), (832, 480), flags=cv2.INTER_LINEAR
        )
        for t in range(frames)
    ]


def test_survives_a_pan_over_texture_at_crf_35() -> None:
    """The hard case: texture everywhere moving 0.5 px a frame. A mark fixed to the cell grid is dragged
    along by x264's motion compensation and eroded (7 of these 72 frames read); the mark that follows
    the pan, read by searching the grid's shift, reads in >= 90 % of the frames, every frame on its own
    (the search starts from the shift the previous frame had)."""
    frames = textured_pan()
    ids, exact = reread_at_crf_35(frames)
    assert np.mean(exact) >= 0.9, "".join(".x"[not e] for e in exact)
    assert set(ids) <= {JOB, None}


def test_the_mark_follows_a_pan_and_nothing_else(clip: list[np.ndarray]) -> None:
    """By whole pixels, as far as the picture panned; a cup moving over a still backdrop moves no mark."""
    panned = [frame.copy() for frame in textured_pan(48)]
    embedder = WatermarkEmbedder(JOB)
    offsets = []
    for frame in panned:
        embedder.apply(frame)
        offsets.append(embedder.offset)
    assert offsets[0] == (0, 0)
    assert abs(offsets[-1][0] - (-0.5 * 47)) <= 2 and offsets[-1][1] == 0
    # The same amplitude as on the grid: invisible alike.
    values = [psnr(a, b) for a, b in zip(textured_pan(48), panned, strict=True)]
    assert min(values) >= 38.0
    # Each frame, uncompressed, reads at its shift (and not on the bare grid once it has moved).
    found, shift = find_job_id(panned[-1])
    assert found == JOB and shift is not None and np.abs(np.subtract(shift, offsets[-1])).max() <= 1
    assert extract_job_id(panned[-1]) is None
    still = WatermarkEmbedder(JOB)
    for frame in [frame.copy() for frame in clip]:
        still.apply(frame)
        assert still.offset == (0, 0)


def test_searching_an_unmarked_or_other_video_finds_nothing_wrong(clip: list[np.ndarray]) -> None:
    """The shift search decodes only where the cells agree per bit: unmarked frames read None."""
    for frame in clip[:4] + textured_pan(4):
        assert find_job_id(frame) == (None, None)
    assert read_frame_ids(textured_pan(12)) == [None] * 12


@pytest.mark.slow
def test_a_diagonal_pan_or_a_zoom_over_texture_is_not_yet_read_but_never_misread() -> None:
    """The limits left (docs/status.md): a textured picture zoomed in, or panned diagonally, at crf 35.
    A zoom is no pan (the tiles disagree), so the mark stays on the grid and is dragged and eroded; a
    diagonal pan is followed but reads in only about 70 % of the frames. No frame reads a wrong id."""
    zoomed = []
    backdrop = _picture("chelsea.png", 832, 480)
    for t in range(48):
        zoom = 1 + 0.1 * t / 47
        camera = np.array([[zoom, 0, 416 * (1 - zoom)], [0, zoom, 240 * (1 - zoom)]])
        zoomed.append(apply_camera(backdrop, camera))
    for frames in (zoomed, textured_pan(48, 0.4, 0.3)):
        ids, exact = reread_at_crf_35(frames)
        assert all(exact[:4]) and set(ids) <= {JOB, None}
