"""An invisible watermark carrying the job id in every frame, cheap enough for the preview's frame budget.

Why not the `invisible-watermark` package: its DWT-DCT-SVD costs ~100 ms per frame; a preview clip
has 120 frames and a 2 s budget. This is a spread-spectrum mark built for H.264 instead:

- Payload: the 96 bits of the job id (`video_` + 24 hex digits) followed by their CRC-32, 128 bits.
- Carrier: the frame is cut into 8x8-pixel cells, aligned with the codec's 8x8 transform blocks
  (misaligned cells lose most of the mark at crf 35). A fixed, public permutation gives each cell
  one payload bit and a pseudo-random chip sign; the cell's luma is shifted by
  `strength * chip * (bit ? +1 : -1)` grey levels (all three RGB channels equally, so chroma is
  untouched). Applying it is two saturating uint8 additions of a prebuilt pattern. It is (nearly) the
  same in every frame, which is what lets x264 keep it in static regions at low quality (skipped
  blocks copy it from the reference frame).
- Informed embedding: a static picture pulls some bits' scores the wrong way in every frame alike;
  every 12 frames the embedder measures that pull on the unmarked frame and boosts the opposed bits
  (up to 2x strength) before rebuilding the pattern. Without it, some job ids lose a bit for good.
- Reading: per cell, the mean luma minus the mean of its 3x3 neighbourhood (removes the picture's
  smooth content), weighted by 1 / (k + the cell's texture variance): textured cells carry most of
  the picture's interference and most of the codec's error, flat cells (where x264's adaptive
  quantisation also spends more bits) carry the mark cleanly. The weighted correlation with each
  bit's chips gives a soft value per bit; hard decisions whose CRC fails are repaired Chase-style by
  flipping combinations of the 10 least reliable bits (a wrong id then passes with probability
  about 2**10 / 2**32 per frame).

Not a secret and not tamper-proof: anyone with this code can read or scrub the mark. It survives
H.264 re-encoding at lower quality (crf 35) in static and slowly moving content, and camera moves over
smooth content: the preview's push-in and a 0.5 px/frame pan of its (blurred) backdrop read in every
frame. It is not designed to survive crops or rotations (the cell grid no longer lines up), nor sharp
texture panning or zooming under it re-encoded at low quality: x264 then predicts each block from the
last frame shifted with the content and drops the small residual that would restore the mark, so the
reference frame's copy is dragged along and eroded (measured: docs/status.md); those frames read
None, not a wrong id. A video rescaled to another size is read by resizing it back to the kissgen
sizes of the same aspect ratio.
"""

from __future__ import annotations

import functools
import io
import re
import zlib
from collections import Counter
from dataclasses import dataclass

import av
import cv2
import numpy as np
from pydantic import BaseModel, Field

CELL = 8
"""Cell side in pixels: one H.264 8x8 transform block."""
ID_BITS = 96
CRC_BITS = 32
PAYLOAD_BITS = ID_BITS + CRC_BITS
DEFAULT_STRENGTH = 2.5
"""Grey levels per cell: PSNR about 40 dB against the unmarked frame."""
CHASE_BITS = 10
"""Least reliable bits tried in all 2**10 combinations when the CRC fails."""
TEXTURE_K = 4.0
"""Cell variance (grey levels squared) at which a cell's weight halves."""
ADAPT_EVERY = 12
"""Frames between two measurements of the picture's own pull on each bit (informed embedding)."""
ADAPT_SLACK = 0.25
"""Opposition up to this share of a bit's nominal signal is tolerated; beyond it the bit is boosted."""
MAX_GAIN = 2.0
"""A boosted bit's amplitude is at most this many times `strength`."""
MIN_CELLS = 8 * PAYLOAD_BITS
"""Frames with fewer cells (smaller than about 256x256) carry too little mark to read reliably."""
_SEED = 0x6B6973735F776D  # "kiss_wm": fixed so that every reader finds the same layout
_JOB_ID = re.compile(r"^video_([0-9a-f]{24})$")


def job_id_payload(job_id: str) -> np.ndarray:
    """The 128 payload bits (0/1, uint8) of a job id: its 96-bit value, then its CRC-32."""
    match = _JOB_ID.match(job_id)
    if match is None:
        raise ValueError(f"`job_id` must be 'video_' followed by 24 lowercase hex digits but is {job_id!r}")
    raw = bytes.fromhex(match.group(1))
    return np.unpackbits(np.frombuffer(raw + zlib.crc32(raw).to_bytes(4, "big"), np.uint8))


@dataclass(frozen=True)
class _Layout:
    """Which payload bit and chip sign each cell of a (rows, cols) grid carries."""

    rows: int
    cols: int
    bit_of: np.ndarray  # (cells,) int, payload bit index of each cell
    chip: np.ndarray  # (cells,) float32, +1/-1


@functools.lru_cache(maxsize=16)
def _layout(rows: int, cols: int) -> _Layout:
    cells = rows * cols
    if cells < PAYLOAD_BITS:
        raise ValueError(f"a {cols * CELL}x{rows * CELL} frame is too small for the watermark")
    rng = np.random.default_rng([_SEED, rows, cols])
    bit_of = rng.permutation(cells) % PAYLOAD_BITS
    chip = rng.choice(np.array([-1.0, 1.0], np.float32), size=cells)
    bit_of.setflags(write=False)
    chip.setflags(write=False)
    return _Layout(rows, cols, bit_of, chip)


class WatermarkEmbedder:
    """Adds one job's watermark to a job's frames in place, in order.

    Informed embedding: the picture itself correlates with each bit's chips a little, and in a static
    scene it does so the same way in every frame, so a bit the picture happens to push the wrong way
    would be misread in every frame. Every `adapt_every` frames the embedder reads the incoming
    (unmarked) frame as a detector would and raises the amplitude of the bits the picture opposes,
    up to `max_gain` x `strength`; the pattern is then rebuilt. In between, marking a frame is two
    saturating uint8 additions of the same pattern.
    """

    def __init__(
        self,
        job_id: str,
        strength: float = DEFAULT_STRENGTH,
        adapt_every: int = ADAPT_EVERY,
        max_gain: float = MAX_GAIN,
    ):
        if not 0.5 <= strength <= 8.0:
            raise ValueError(f"`strength` must be in 0.5..8 grey levels but is {strength}")
        if adapt_every < 0:
            raise ValueError(f"`adapt_every` must be 0 (never) or a number of frames but is {adapt_every}")
        if not 1.0 <= max_gain <= 4.0:
            raise ValueError(f"`max_gain` must be in 1..4 but is {max_gain}")
        self.job_id = job_id
        self.strength = float(strength)
        self.adapt_every = adapt_every
        self.max_gain = float(max_gain)
        self._signs = job_id_payload(job_id).astype(np.float32) * 2 - 1
        self._size: tuple[int, int] | None = None
        self._pattern: tuple[np.ndarray, np.ndarray] | None = None
        self._count = 0

    def amplitudes(self, frame: np.ndarray) -> np.ndarray:
        """Grey levels per payload bit for this unmarked frame: `strength`, more where the picture opposes."""
        luma = _luma(frame)
        layout = _layout(luma.shape[0] // CELL, luma.shape[1] // CELL)
        detail, weight = _cell_statistics(luma)
        weighted = weight.ravel() * layout.chip
        host = np.bincount(layout.bit_of, weights=detail.ravel() * weighted, minlength=PAYLOAD_BITS)
        # What one grey level of mark adds to a bit's score: the cell-level high-pass keeps 8/9 of it.
        per_level = np.bincount(layout.bit_of, weights=weight.ravel(), minlength=PAYLOAD_BITS) * (8 / 9)
        opposed = np.maximum(0.0, -self._signs * host - ADAPT_SLACK * self.strength * per_level)
        return np.minimum(self.strength + opposed / per_level, self.strength * self.max_gain)

    def _build(self, height: int, width: int, amplitudes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (positive, negative) uint8 parts of the pattern, 3 channels each."""
        rows, cols = height // CELL, width // CELL
        layout = _layout(rows, cols)
        grid = (layout.chip * (self._signs * amplitudes)[layout.bit_of]).reshape(rows, cols)
        levels = cv2.resize(
            grid.astype(np.float32), (cols * CELL, rows * CELL), interpolation=cv2.INTER_NEAREST
        )
        # A fixed dither turns fractional amplitudes into whole grey levels with the right cell mean.
        levels = np.floor(levels + _dither(rows * CELL, cols * CELL))
        full = np.zeros((height, width), np.float32)
        full[: rows * CELL, : cols * CELL] = levels
        positive = np.clip(full, 0, 255).astype(np.uint8)
        negative = np.clip(-full, 0, 255).astype(np.uint8)
        return cv2.merge([positive] * 3), cv2.merge([negative] * 3)

    def apply(self, frame: np.ndarray) -> None:
        """Watermark the job's next (H, W, 3) uint8 RGB frame in place (saturating at 0 and 255)."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frame must be RGB uint8 (H, W, 3) but is {frame.dtype} {frame.shape}")
        size = (frame.shape[0], frame.shape[1])
        adapt = self.adapt_every > 0 and self._count % self.adapt_every == 0
        if self._pattern is None or size != self._size or adapt:
            amplitudes = (
                self.amplitudes(frame)
                if self.adapt_every > 0
                else np.full(PAYLOAD_BITS, self.strength, np.float32)
            )
            self._pattern, self._size = self._build(*size, amplitudes), size
        self._count += 1
        positive, negative = self._pattern
        if frame.flags.c_contiguous:
            cv2.add(frame, positive, dst=frame)
            cv2.subtract(frame, negative, dst=frame)
        else:  # OpenCV would write into a copy; do it through one and copy back
            frame[...] = cv2.subtract(cv2.add(frame, positive), negative)


@functools.lru_cache(maxsize=8)
def _dither(height: int, width: int) -> np.ndarray:
    dither = np.random.default_rng(_SEED + 1).random((height, width), dtype=np.float32)
    dither.setflags(write=False)
    return dither


def _luma(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim == 2:
        return frame.astype(np.float32)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be (H, W, 3) RGB or (H, W) luma but is {frame.shape}")
    return cv2.cvtColor(np.ascontiguousarray(frame, dtype=np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)


def _cell_statistics(luma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell: its detail (mean minus its 3x3 neighbourhood's mean) and its weight 1/(k + texture)."""
    rows, cols = luma.shape[0] // CELL, luma.shape[1] // CELL
    luma = np.ascontiguousarray(luma[: rows * CELL, : cols * CELL])
    mean = cv2.resize(luma, (cols, rows), interpolation=cv2.INTER_AREA)  # exact block means
    square = cv2.resize(luma * luma, (cols, rows), interpolation=cv2.INTER_AREA)
    variance = np.maximum(square - mean * mean, 0.0)
    detail = mean - cv2.blur(mean, (3, 3), borderType=cv2.BORDER_REFLECT)
    weight = 1.0 / (TEXTURE_K + cv2.blur(variance, (3, 3), borderType=cv2.BORDER_REFLECT))
    return detail, weight


def bit_scores(frame: np.ndarray) -> np.ndarray:
    """Soft value per payload bit (positive: 1), from an RGB frame or its luma."""
    luma = _luma(frame)
    layout = _layout(luma.shape[0] // CELL, luma.shape[1] // CELL)
    detail, weight = _cell_statistics(luma)
    return np.bincount(layout.bit_of, weights=(detail * weight).ravel() * layout.chip, minlength=PAYLOAD_BITS)


def _crc_syndromes() -> np.ndarray:
    """How flipping each payload bit changes (computed CRC xor stored CRC): the CRC is affine over GF(2)."""
    zero = zlib.crc32(bytes(ID_BITS // 8))
    eye = np.eye(ID_BITS, dtype=np.uint8)
    data = [zlib.crc32(np.packbits(eye[i]).tobytes()) ^ zero for i in range(ID_BITS)]
    stored = [1 << (CRC_BITS - 1 - j) for j in range(CRC_BITS)]
    return np.array(data + stored, dtype=np.uint64)


_SYNDROMES = _crc_syndromes()
_FLIPS = ((np.arange(2**CHASE_BITS)[:, None] >> np.arange(CHASE_BITS)) & 1).astype(bool)


def decode_scores(scores: np.ndarray) -> str | None:
    """The job id the soft bit values spell, or None when no candidate passes the CRC."""
    bits = (np.asarray(scores) > 0).astype(np.uint8)
    data = np.packbits(bits[:ID_BITS]).tobytes()
    mismatch = np.uint64(zlib.crc32(data) ^ int.from_bytes(np.packbits(bits[ID_BITS:]).tobytes(), "big"))
    if mismatch:
        weakest = np.argsort(np.abs(scores))[:CHASE_BITS]
        toggles = np.zeros(len(_FLIPS), np.uint64)
        for column, bit in enumerate(weakest):
            toggles[_FLIPS[:, column]] ^= _SYNDROMES[bit]
        hits = np.flatnonzero(toggles == mismatch)
        if hits.size == 0:
            return None
        # Of the candidates, the one whose flipped bits were the least certain.
        best = hits[np.argmin(_FLIPS[hits] @ np.abs(scores[weakest]))]
        bits[weakest[_FLIPS[best]]] ^= 1
        data = np.packbits(bits[:ID_BITS]).tobytes()
    return "video_" + data.hex()


def extract_job_id(frame: np.ndarray, size: tuple[int, int] | None = None) -> str | None:
    """The job id watermarked into an RGB frame (or its luma), or None when there is none to read.

    `size` (width, height): the size the frame was marked at, when it has been rescaled since; the
    luma is resized back to it first. None also for frames too small to carry the mark reliably
    (fewer than MIN_CELLS cells).
    """
    luma = _luma(frame)
    if size is not None and (luma.shape[1], luma.shape[0]) != tuple(size):
        luma = cv2.resize(luma, tuple(size), interpolation=cv2.INTER_CUBIC)
    if (luma.shape[0] // CELL) * (luma.shape[1] // CELL) < MIN_CELLS:
        return None
    return decode_scores(bit_scores(luma))


def candidate_sizes(width: int, height: int, limit: int = 8) -> list[tuple[int, int]]:
    """Output sizes kissgen can produce (multiples of 16, 128..1280) with this frame's aspect ratio.

    A video rescaled after marking is read by resizing it back to the size it was marked at; these
    are the sizes worth trying, closest aspect ratio first.
    """
    aspect = width / height
    sizes = [
        (w, h)
        for w in range(128, 1281, 16)
        for h in range(128, 1281, 16)
        if abs(w / h - aspect) / aspect < 0.015 and (w, h) != (width, height)
    ]
    sizes.sort(key=lambda s: (abs(s[0] / s[1] - aspect), abs(s[0] - width)))
    return sizes[:limit]


class WatermarkReading(BaseModel):
    """What the frames of one video say: the majority job id among frames whose CRC passes."""

    job_id: str | None = Field(
        None, description="Most frequent id among frames that decoded; None if none did."
    )
    frames_checked: int = Field(description="Frames read (evenly spaced over the video).")
    frames_matching: int = Field(description="Frames that decoded to `job_id`.")
    frames_other: int = Field(0, description="Frames that decoded to a different id (expected 0).")
    marked_size: str | None = Field(
        None, description="WIDTHxHEIGHT the video was marked at, when it was read rescaled back to it."
    )


def read_frames_watermark(frames: list[np.ndarray], try_rescaled: bool = True) -> WatermarkReading:
    """The majority reading over already decoded frames (all one size).

    When no frame reads at its own size and `try_rescaled`, the sizes of `candidate_sizes` are tried
    on a few frames, and the first that reads is used for all of them.
    """
    reading = _majority(frames, None)
    if reading.job_id is not None or not try_rescaled or not frames:
        return reading
    height, width = frames[0].shape[:2]
    probe = frames[:: max(1, len(frames) // 4)][:4]
    for size in candidate_sizes(width, height):
        if any(extract_job_id(frame, size) is not None for frame in probe):
            rescaled = _majority(frames, size)
            return rescaled.model_copy(update={"marked_size": f"{size[0]}x{size[1]}"})
    return reading


def _majority(frames: list[np.ndarray], size: tuple[int, int] | None) -> WatermarkReading:
    ids = Counter(job_id for frame in frames if (job_id := extract_job_id(frame, size)) is not None)
    if not ids:
        return WatermarkReading(job_id=None, frames_checked=len(frames), frames_matching=0)
    job_id, count = ids.most_common(1)[0]
    return WatermarkReading(
        job_id=job_id,
        frames_checked=len(frames),
        frames_matching=count,
        frames_other=sum(ids.values()) - count,
    )


def read_video_watermark(mp4_bytes: bytes, max_frames: int = 48) -> WatermarkReading:
    """Read up to `max_frames` frames, evenly spaced over the video, decoded with PyAV.

    Every frame is decoded (H.264 needs its references) but only the chosen ones are converted.
    """
    if max_frames < 1:
        raise ValueError(f"`max_frames` must be at least 1 but is {max_frames}")
    with av.open(io.BytesIO(mp4_bytes), mode="r") as container:
        stream = container.streams.video[0]
        total = stream.frames
        if total > 0:
            wanted = set(np.linspace(0, total - 1, min(total, max_frames)).round().astype(int).tolist())
        else:
            wanted = set(range(max_frames))
        frames = []
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError("the video has no frames")
    return read_frames_watermark(frames)
