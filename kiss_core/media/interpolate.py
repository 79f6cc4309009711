"""Frame-rate conversion by motion-compensated interpolation: frames at one rate → frames at another.

Diffusion models generate at their native rate (Wan 2.1/2.2: 16 fps); clients ask for 8-30 fps.
Repeating or cross-fading frames shows as judder or ghosting on a moving face, so each output frame
between two generated ones is built from dense optical flow (OpenCV's DIS): both neighbours are
warped toward the intermediate time and blended by their distance in time. The flow at the
intermediate time is approximated from the two flows between the neighbours as in Super SloMo
(Jiang et al., 2018): F_t0 = -(1-t) t F01 + t² F10 and F_t1 = (1-t)² F01 - t(1-t) F10.

Output frame i shows time i / fps_out; input frame j shows j / fps_in. Times past the last input
frame hold it. The output count is the caller's (the plan's frame count), so the clip length and the
contact frame stay exactly what was planned.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import cv2
import numpy as np

_EXACT = 1e-6  # a source time this close to an input frame is that frame (no interpolation)
_MIN_FLOW_SIDE = 16  # DIS needs frames this large; smaller ones (icons, tests) are cross-faded
_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def source_times(count: int, fps_in: float, fps_out: float) -> np.ndarray:
    """Where each of `count` output frames falls on the input timeline, in input frames (float)."""
    if count < 0 or fps_in <= 0 or fps_out <= 0:
        raise ValueError(f"`count` >= 0, `fps_in` and `fps_out` > 0 but are {count}, {fps_in}, {fps_out}")
    return np.arange(count, dtype=np.float64) * (fps_in / fps_out)


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame


def _warp(frame: np.ndarray, flow: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """`frame` sampled at grid + flow (backward warping), as float32."""
    maps = np.ascontiguousarray(grid + flow, dtype=np.float32)
    # cv2's stub requires map2, but OpenCV takes None when map1 holds the (x, y) pairs.
    return cv2.remap(  # type: ignore[call-overload]
        frame.astype(np.float32), maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


class _PairFlows:
    """Forward and backward DIS flow of one pair of neighbouring frames, computed once per pair."""

    def __init__(self, preset: str):
        if preset not in _PRESETS:
            raise ValueError(f"`preset` must be one of {sorted(_PRESETS)} but is {preset!r}")
        self.dis = cv2.DISOpticalFlow.create(_PRESETS[preset])
        self.index = -1
        self.forward = self.backward = np.empty(0)

    def between(self, frames: Sequence[np.ndarray], index: int) -> tuple[np.ndarray, np.ndarray]:
        if index != self.index:
            first, second = _gray(frames[index]), _gray(frames[index + 1])
            if min(first.shape[:2]) < _MIN_FLOW_SIDE:
                self.forward = self.backward = np.zeros((*first.shape[:2], 2), np.float32)
                self.index = index
                return self.forward, self.backward
            # cv2's stub requires the output flow, but OpenCV takes None and allocates it.
            self.forward = self.dis.calc(first, second, None)  # type: ignore[call-overload]
            self.backward = self.dis.calc(second, first, None)  # type: ignore[call-overload]
            self.index = index
        return self.forward, self.backward


def interpolate_between(
    first: np.ndarray,
    second: np.ndarray,
    t: float,
    flows: tuple[np.ndarray, np.ndarray],
    grid: np.ndarray | None = None,
) -> np.ndarray:
    """The frame at time t (0 < t < 1) between `first` and `second`, given their flows (F01, F10)."""
    forward, backward = flows
    if grid is None:
        grid = pixel_grid(first.shape[0], first.shape[1])
    flow_t0 = -(1 - t) * t * forward + t * t * backward
    flow_t1 = (1 - t) ** 2 * forward - t * (1 - t) * backward
    blended = (1 - t) * _warp(first, flow_t0, grid) + t * _warp(second, flow_t1, grid)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def pixel_grid(height: int, width: int) -> np.ndarray:
    """(H, W, 2) float32 pixel coordinates (x, y), the identity map of cv2.remap."""
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return np.stack([xs, ys], axis=-1)


def resample_frames(
    frames: Sequence[np.ndarray], fps_in: float, fps_out: float, count: int, preset: str = "medium"
) -> Iterator[np.ndarray]:
    """`count` frames at `fps_out` from `frames` (uint8 RGB, one size) at `fps_in`, motion-compensated.

    An output time that falls on an input frame yields a copy of that frame; one between two input
    frames is interpolated along the optical flow. Flows are computed lazily, once per input pair used.
    Every yielded array is a fresh buffer: the producer marks frames in place (watermark, label), and
    an input frame handed out as it is would be marked again where it is held past the end, and be
    read marked by the interpolation of the frames after it.
    """
    if not frames:
        raise ValueError("`frames` is empty")
    times = source_times(count, fps_in, fps_out)
    flows = _PairFlows(preset)
    grid: np.ndarray | None = None
    last = len(frames) - 1
    for time in times:
        index = int(np.floor(time + _EXACT))
        t = time - index
        if index >= last or t <= _EXACT:
            yield frames[min(index, last)].copy()
            continue
        if grid is None:
            grid = pixel_grid(frames[0].shape[0], frames[0].shape[1])
        yield interpolate_between(frames[index], frames[index + 1], t, flows.between(frames, index), grid)
