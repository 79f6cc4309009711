"""Frame-rate conversion by optical flow, on real content: a photo in motion and rendered preview frames."""

from __future__ import annotations

import numpy as np
import pytest

from kiss_core.media.images import decode_image
from kiss_core.media.interpolate import resample_frames, source_times
from kiss_core.scene.choreography import plan_kiss
from kiss_core.scene.render import PreviewCompositor
from kiss_core.schemas import VideoParams
from kiss_core.settings import LimitSettings, Settings
from tests.support.photos import astronaut_path
from tests.support.studio import SyntheticStudio


def _error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def _crossfade(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return np.rint((1 - t) * a.astype(np.float64) + t * b.astype(np.float64)).astype(np.uint8)


@pytest.mark.parametrize(
    ("fps_in", "fps_out", "count"), [(16, 24, 120), (16, 30, 150), (16, 16, 80), (16, 8, 40), (16, 25, 7)]
)
def test_output_times_and_count_are_exact(fps_in: int, fps_out: int, count: int) -> None:
    times = source_times(count, fps_in, fps_out)
    assert len(times) == count and times[0] == 0.0
    np.testing.assert_allclose(times / fps_in, np.arange(count) / fps_out)  # frame i shows i / fps_out s
    frames = [np.full((8, 8, 3), i, np.uint8) for i in range(int(np.ceil(times[-1])) + 1)]
    out = list(resample_frames(frames, fps_in, fps_out, count))
    assert len(out) == count and all(f.shape == (8, 8, 3) and f.dtype == np.uint8 for f in out)
    on_grid = [i for i, t in enumerate(times) if abs(t - round(t)) < 1e-9]
    for i in on_grid:  # output times that fall on an input frame are that frame, unchanged
        np.testing.assert_array_equal(out[i], frames[round(times[i])])
    assert len({id(f) for f in out}) == count  # every frame its own buffer (marks are drawn in place)


def test_times_past_the_last_input_frame_hold_it() -> None:
    frames = [np.full((4, 4, 3), v, np.uint8) for v in (10, 20)]
    out = list(resample_frames(frames, 16, 24, 5))
    assert [int(f[0, 0, 0]) for f in out] == [10, 17, 20, 20, 20]  # times 0, 2/3, 4/3, 2, 8/3


def test_marking_the_frames_in_place_does_not_change_the_frames_after_them() -> None:
    """The producer marks each frame in place as it comes (watermark, label). An input frame handed out
    as it was would be marked twice where it is held past the end, and the interpolated frames after it
    would be made from a marked neighbour."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    untouched = [f.copy() for f in frames]
    clean = [f.copy() for f in resample_frames(untouched, 16, 24, 8)]
    marked = []
    for frame in resample_frames(frames, 16, 24, 8):
        marked.append(frame.copy())
        frame[:4] = 255  # a mark drawn over the frame, in place
    for clean_frame, marked_frame in zip(clean, marked, strict=True):
        np.testing.assert_array_equal(clean_frame, marked_frame)
    for frame, original in zip(frames, untouched, strict=True):
        np.testing.assert_array_equal(frame, original)  # the generated frames are left as they were


def test_a_moving_photo_is_interpolated_along_its_motion_not_cross_faded() -> None:
    """The astronaut photo panned by 12 px right and 6 px down: the middle frame is the half-way pan."""
    photo = decode_image(astronaut_path().read_bytes(), LimitSettings(), "a")
    dx, dy = 12, 6
    first = np.ascontiguousarray(photo[100:292, 100:356])
    second = np.ascontiguousarray(photo[100 - dy : 292 - dy, 100 - dx : 356 - dx])
    middle = np.ascontiguousarray(photo[100 - dy // 2 : 292 - dy // 2, 100 - dx // 2 : 356 - dx // 2])
    interpolated = list(resample_frames([first, second], 1, 2, 2))[1]
    inner = (slice(16, -16), slice(16, -16))  # away from the borders the pan brings in
    flow_error = _error(interpolated[inner], middle[inner])
    fade_error = _error(_crossfade(first, second, 0.5)[inner], middle[inner])
    assert flow_error < 0.5 * fade_error, (flow_error, fade_error)


@pytest.mark.slow  # ~15 s: the dlib analysis of the synthetic pair
def test_rendered_preview_frames_at_half_rate_come_back_closer_than_a_cross_fade(tmp_path) -> None:
    """A 30 fps preview clip, kept at 15 fps and interpolated back to 30: the in-between frames."""
    settings = Settings(storage={"backend": "local", "local_root": str(tmp_path)})
    pair = SyntheticStudio(settings, str(tmp_path)).pair(0, 1)
    params = VideoParams(style="romantic", seconds=1.0, fps=30, size="256x192")
    plan = plan_kiss(pair.analyses, params)
    truth = [f.copy() for f in PreviewCompositor().render(plan, pair.photos, pair.analyses)]
    kept = truth[::2]
    out = list(resample_frames(kept, 15, 30, len(truth)))
    assert len(out) == len(truth) == 30
    for i in range(0, 30, 2):
        np.testing.assert_array_equal(out[i], truth[i])
    middles = range(1, len(kept) * 2 - 1, 2)
    moving = [i for i in middles if _error(truth[i - 1], truth[i + 1]) > 0.5]
    assert len(moving) >= 5, "the clip moves"
    flow_error = np.mean([_error(out[i], truth[i]) for i in moving])
    fade_error = np.mean([_error(_crossfade(truth[i - 1], truth[i + 1], 0.5), truth[i]) for i in moving])
    assert flow_error < fade_error, (flow_error, fade_error)
