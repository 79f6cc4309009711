"""Probe and one streaming decode pass with PyAV: header checks, then per-frame cut and motion signals
and the frames sampled for analysis, never more of the clip in memory than `keep_decoded_mib`.

Every decoded frame leaves a 64-bin histogram and a global shift (phase correlation of 160-px
thumbnails) behind; one frame in `fps / sample_fps` is kept, downscaled to `analysis_max_side`. The
decoded frames themselves (YUV 4:2:0, copied into one buffer: `KeptFrames`) are kept for the export
while they fit in `keep_decoded_mib`, so a kept clip is not decoded twice; beyond that they are
dropped at once.
`max_duration_s` is enforced while decoding, so a container that claims to be short cannot make a
worker hold an hour of samples.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np

from kiss_core.curation.config import CurateConfig
from kiss_core.curation.quality import blockiness
from kiss_core.curation.reasons import Reason, Rejected

THUMB_WIDTH = 160  # cut and motion signals are computed on thumbnails this wide
MOTION_REFERENCE_WIDTH = 832  # camera motion is reported in pixels of a frame this wide


@dataclass(frozen=True)
class Probe:
    """What the container's header says about its first video stream."""

    width: int
    height: int
    fps: float
    declared_frames: int  # 0 when the header does not say
    duration_s: float  # 0 when the header does not say
    codec: str


@dataclass
class Sample:
    """A frame kept for analysis: its index and time in the source, RGB at analysis size."""

    index: int
    time_s: float
    frame: np.ndarray
    blockiness: float  # measured at source resolution, where the codec's blocks are


class KeptFrames:
    """A clip's decoded YUV 4:2:0 frames, copied into one buffer of at most `budget` bytes, for the export.

    Copied rather than held: holding the decoder's own frames made it allocate new ones for every frame
    (its pool cannot reuse a held buffer), in its threads' malloc arenas, which kept the memory: +430 MiB
    of RSS per Ray actor for 74 MiB of frames. One buffer is one mapping: its untouched pages cost
    nothing and all of it goes back to the system with the clip. Frames come back through `KeptFrame`,
    converted to RGB by the same libswscale call, with the frame's colour space and range, as the
    decoded frame would be (bit-identical).
    """

    def __init__(self, first: av.VideoFrame, budget: float):
        self.width, self.height = first.width, first.height
        self.colour = (first.colorspace, first.color_range)
        self.frame_bytes = self.width * self.height * 3 // 2
        self._buffer = np.empty((int(budget // self.frame_bytes), self.frame_bytes), np.uint8)
        self._times: list[float | None] = []

    @staticmethod
    def fits(frame: av.VideoFrame) -> bool:
        return frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0

    def add(self, frame: av.VideoFrame) -> bool:
        """Copy `frame` in; False (nothing copied) when it does not fit: full, or unlike the first frame."""
        same = (frame.width, frame.height) == (self.width, self.height)
        same = same and (frame.colorspace, frame.color_range) == self.colour
        if not (same and self.fits(frame)) or len(self._times) >= len(self._buffer):
            return False
        w, h = self.width, self.height
        flat = self._buffer[len(self._times)]
        offset = 0
        for plane, (pw, ph) in zip(frame.planes, ((w, h), (w // 2, h // 2), (w // 2, h // 2)), strict=True):
            rows = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)[:ph, :pw]
            flat[offset : offset + pw * ph].reshape(ph, pw)[:] = rows
            offset += pw * ph
        self._times.append(frame.time)
        return True

    def __len__(self) -> int:
        return len(self._times)

    def __iter__(self) -> Iterator[KeptFrame]:
        return (KeptFrame(self, k) for k in range(len(self)))

    def yuv(self, index: int) -> np.ndarray:
        """(H * 3 / 2, W) planar YUV 4:2:0, the layout of VideoFrame.from_ndarray."""
        return self._buffer[index].reshape(self.height * 3 // 2, self.width)


@dataclass(frozen=True)
class KeptFrame:
    """One frame of `KeptFrames`, with what the export reads of a decoded frame."""

    store: KeptFrames
    index: int

    @property
    def time(self) -> float | None:
        return self.store._times[self.index]

    @property
    def width(self) -> int:
        return self.store.width

    @property
    def height(self) -> int:
        return self.store.height

    def to_ndarray(self, format: str) -> np.ndarray:
        frame = av.VideoFrame.from_ndarray(self.store.yuv(self.index), format="yuv420p")
        frame.colorspace, frame.color_range = self.store.colour
        return frame.to_ndarray(format=format)


@dataclass
class Decoded:
    """The clip as the analysis sees it: per-frame signals and the sampled frames."""

    probe: Probe
    times: np.ndarray  # (N,) seconds of every decoded frame
    cut_distance: np.ndarray  # (N,) histogram distance to the previous frame (0 for the first)
    shift_px: np.ndarray  # (N,) global shift from the previous frame, px at 832 wide
    samples: list[Sample] = field(default_factory=list)
    scale: float = 1.0  # analysis pixels per source pixel
    # Every decoded frame in order, for the export; None when they did not fit in `keep_decoded_mib`.
    frames: KeptFrames | None = None

    @property
    def frame_count(self) -> int:
        return len(self.times)

    @property
    def fps(self) -> float:
        """Frame rate measured from the decoded timestamps (median interval)."""
        if len(self.times) < 2:
            return self.probe.fps
        return float(1.0 / max(np.median(np.diff(self.times)), 1e-6))


def probe(path: Path, config: CurateConfig) -> Probe:
    """Header checks only (size, streams, resolution, rate, length): no frame is decoded."""
    size = os.path.getsize(path)
    if size == 0:
        raise Rejected(Reason.EMPTY_FILE)
    if size > config.max_file_bytes:
        raise Rejected(Reason.FILE_TOO_LARGE, detail=f"{size} bytes")
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise Rejected(Reason.UNREADABLE, detail="no video stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            width, height = int(ctx.width or 0), int(ctx.height or 0)
            fps = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 0)
            duration = 0.0  # the longer of what the stream and the container claim
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            if container.duration is not None:
                duration = max(duration, container.duration / av.time_base)
            result = Probe(width, height, fps, int(stream.frames or 0), duration, str(ctx.name or ""))
    except Rejected:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise Rejected(Reason.UNREADABLE, detail=str(exc)[:200]) from None
    check_probe(result, config)
    return result


def check_probe(p: Probe, config: CurateConfig) -> None:
    if p.width <= 0 or p.height <= 0:
        raise Rejected(Reason.UNREADABLE, detail=f"frame size {p.width}x{p.height}")
    if p.width * p.height > config.max_frame_pixels:
        raise Rejected(Reason.FRAME_TOO_LARGE, detail=f"{p.width}x{p.height}")
    if min(p.width, p.height) < config.min_short_side:
        raise Rejected(Reason.TOO_SMALL, detail=f"{p.width}x{p.height}")
    if p.fps and not config.min_fps <= p.fps <= config.max_fps:
        raise Rejected(Reason.BAD_FPS, detail=f"{p.fps:.3f} fps")
    if p.duration_s and p.duration_s < config.min_duration_s:
        raise Rejected(Reason.TOO_SHORT, detail=f"{p.duration_s:.2f} s")
    if p.duration_s > config.max_duration_s:
        raise Rejected(Reason.TOO_LONG, detail=f"{p.duration_s:.2f} s")


def analysis_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) no longer than `max_side`, even, same aspect."""
    scale = min(1.0, max_side / max(width, height))
    return max(2, round(width * scale) // 2 * 2), max(2, round(height * scale) // 2 * 2)


def _histogram(rgb: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256])
    return cv2.normalize(hist, hist).flatten()


def iter_frames(path: Path) -> Iterator[av.VideoFrame]:
    """Every frame of the first video stream, without FFmpeg's frame threads.

    A worker holds one CPU. Frame threads cost more CPU and, at 832x480, even more time: H.264 at
    832x480 on the 2-core machine, 0.61 ms CPU and 0.44 ms wall a frame with them, 0.47 and 0.31 with
    slice threads (one slice a frame: one thread), the same frames.
    """
    with av.open(str(path), mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        yield from container.decode(stream)


def decode_sampled(path: Path, p: Probe, config: CurateConfig) -> Decoded:
    """One pass: cut distance and global shift of every frame, the sampled frames, VFR/truncation checks."""
    aw, ah = analysis_size(p.width, p.height, config.analysis_max_side)
    tw = THUMB_WIDTH
    th = max(2, round(p.height * tw / p.width) // 2 * 2)
    window = cv2.createHanningWindow((tw, th), cv2.CV_32F)
    times: list[float] = []
    cuts: list[float] = []
    shifts: list[float] = []
    samples: list[Sample] = []
    previous_hist: np.ndarray | None = None
    previous_gray: np.ndarray | None = None
    next_sample = 0.0
    period = 1.0 / config.sample_fps
    kept: KeptFrames | None = None
    keep = config.keep_decoded_mib > 0
    try:
        for index, frame in enumerate(iter_frames(path)):
            if frame.width * frame.height > config.max_frame_pixels:
                raise Rejected(Reason.FRAME_TOO_LARGE, detail=f"frame {index}: {frame.width}x{frame.height}")
            t = float(frame.time) if frame.time is not None else index / (p.fps or 25.0)
            if times and t <= times[-1]:
                t = times[-1] + 1.0 / (p.fps or 25.0)  # duplicate or missing timestamps
            if t - (times[0] if times else t) > config.max_duration_s:
                raise Rejected(Reason.TOO_LONG, detail=f"still decoding at {t:.1f} s")
            thumb = frame.to_ndarray(format="rgb24", width=tw, height=th)
            hist = _histogram(thumb)
            gray = cv2.cvtColor(thumb, cv2.COLOR_RGB2GRAY).astype(np.float32)
            if previous_hist is None or previous_gray is None:
                cuts.append(0.0)
                shifts.append(0.0)
            else:
                cuts.append(float(cv2.compareHist(previous_hist, hist, cv2.HISTCMP_BHATTACHARYYA)))
                (dx, dy), _ = cv2.phaseCorrelate(previous_gray, gray, window)
                shifts.append(float(np.hypot(dx, dy)) * MOTION_REFERENCE_WIDTH / tw)
            previous_hist, previous_gray = hist, gray
            times.append(t)
            if keep and index == 0 and KeptFrames.fits(frame):
                kept = KeptFrames(frame, config.keep_decoded_mib * 2**20)
            if kept is not None and not kept.add(frame):
                kept = None  # over budget (or a frame unlike the first): the export decodes again
            if t - times[0] >= next_sample - 1e-6:
                rgb = frame.to_ndarray(format="rgb24", width=aw, height=ah)
                block = blockiness(frame.to_ndarray(format="gray"))
                samples.append(Sample(index, t, rgb, block))
                next_sample += period * max(1, int((t - times[0] - next_sample) / period) + 1)
    except Rejected:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        if len(times) < 2:
            raise Rejected(Reason.UNREADABLE, detail=str(exc)[:200]) from None
        raise Rejected(
            Reason.TRUNCATED, detail=f"decoding stopped after {len(times)} frames: {exc}"[:200]
        ) from None
    if len(times) < 2:
        raise Rejected(Reason.UNREADABLE if not times else Reason.TOO_SHORT, detail=f"{len(times)} frames")
    decoded = Decoded(p, np.asarray(times), np.asarray(cuts), np.asarray(shifts), samples, aw / p.width, kept)
    check_decoded(decoded, config)
    return decoded


def check_decoded(d: Decoded, config: CurateConfig) -> None:
    # Uneven intervals first: they also make a container's declared frame count meaningless.
    intervals = np.diff(d.times)
    median = float(np.median(intervals))
    if median > 0 and len(intervals) >= 4:
        deviation = float(np.percentile(np.abs(intervals - median), 90)) / median
        if deviation > config.max_interval_jitter:
            raise Rejected(Reason.VARIABLE_FPS, detail=f"interval deviation {deviation:.2f}")
    declared = max(d.probe.declared_frames, round(d.probe.duration_s * (d.probe.fps or d.fps)))
    if declared and d.frame_count < config.min_frame_share * declared:
        raise Rejected(Reason.TRUNCATED, detail=f"{d.frame_count} of {declared} declared frames")
    if not config.min_fps <= d.fps <= config.max_fps:
        raise Rejected(Reason.BAD_FPS, detail=f"{d.fps:.3f} fps measured")
    duration = float(d.times[-1] - d.times[0]) + 1.0 / d.fps
    if duration < config.min_duration_s:
        raise Rejected(Reason.TOO_SHORT, detail=f"{duration:.2f} s decoded")
