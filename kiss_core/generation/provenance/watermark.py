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
- Pans: x264 at low quality predicts each block from the last frame shifted with the picture and
  drops the small residual that would put a mark fixed to the grid back, so over moving texture such
  a mark is dragged along and eroded (7 of 72 frames of a 0.5 px/frame pan read at crf 35). So the
  mark follows the picture's pan instead, by whole pixels (`PanTracker`: phase correlation of 3x3
  tiles at 1/4 size, about 0.6 ms a frame; a pan is a shift 7 of 9 textured tiles agree on, so
  people moving over a still background or a zoom move no mark), and the codec carries it intact.
  A reader that fails on the grid searches the grid's whole-pixel shift (`find_job_id`, within
  48 px, seeded by the previous frame's shift), decoding only shifts whose cells agree per bit; there
  a confidently wrong bit anywhere is repaired as well (2**6 x 128 more candidates).

Not a secret and not tamper-proof: anyone with this code can read or scrub the mark. It survives
H.264 re-encoding at lower quality (crf 35) in static and slowly moving content, the preview's camera
push-in, and pans (0.5 px/frame, over the preview or over texture everywhere: every frame or >= 90 %).
It is not designed to survive crops or rotations (the cell grid no longer lines up); zooms over sharp
texture re-encoded at low quality still drag and erode it, and diagonal pans over texture read in
about 70 % of frames (docs/status.md); such frames read None, not a wrong id. A video rescaled to
another size is read by resizing it back to the kissgen sizes of the same aspect ratio.
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
PAN_ADAPT_EVERY = 4
"""While the mark follows a pan the picture under each cell changes every frame: re-measure this often."""
TRACK_SCALE = 4
"""The picture's pan is measured at 1/4 size (about 0.5 ms a frame at 832x480)."""
TRACK_TILES = (3, 3)
"""Tiles measured apart; a pan is a shift most of them agree on (moving people or a zoom are not)."""
TRACK_AGREE = 0.25
"""Tiles agree when their shifts differ by less than this, in 1/4-size pixels (one frame pixel)."""
TRACK_MIN_RESPONSE = 0.5
"""A tile's phase-correlation peak (0..1) must reach this: texture that really moved, not a smooth tile."""
TRACK_PATIENCE = 12
"""Frames without an agreed pan before the reference is renewed (a cut, a zoom, the picture changed)."""
TRACK_MIN_TILES = 7
"""Of the 9 tiles, this many sure ones must agree before the mark moves."""
TRACK_REANCHOR = 16.0
"""Frame pixels of pan after which the reference picture is renewed (to keep the tiles overlapping)."""
SEARCH_RADIUS = 48
"""Frame pixels: how far from the cell grid a reader looks for a mark that followed a pan."""
MIN_COHERENCE = 2.0
"""Searched shifts are decoded only where the cells agree this much per bit (~1 without a mark, ~4 with)."""
STRONG_WEAK_BITS = 6
"""In a searched frame: besides the Chase repair, one bit anywhere plus any of the 6 least reliable."""
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

    Following pans (`follow`): when the picture under the mark pans, x264 at low quality predicts
    each block from the last frame shifted with the picture and drops the small residual that would
    put a static mark back, so the mark would be dragged along and eroded. So the mark moves with the
    pan instead, by whole pixels (the pattern rolled by the pan measured since the first frame), and
    the codec's prediction carries it intact; a reader finds it by searching shifts
    (`find_job_id`). A pan is a shift most tiles of the picture agree on; moving people over a still
    background, or a zoom, move no mark.
    """

    def __init__(
        self,
        job_id: str,
        strength: float = DEFAULT_STRENGTH,
        adapt_every: int = ADAPT_EVERY,
        max_gain: float = MAX_GAIN,
        follow: bool = True,
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
        self._tracker = PanTracker() if follow else None
        self._moved_at = -1  # frame count when the offset last changed
        self._rolled: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None

    @property
    def offset(self) -> tuple[int, int]:
        """(dx, dy) frame pixels the mark has moved with the picture's pan so far."""
        return self._tracker.offset if self._tracker is not None else (0, 0)

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
        offset = (0, 0)
        if self._tracker is not None:
            before = self._tracker.offset
            offset = self._tracker.update(frame)
            if offset != before:
                self._moved_at = self._count
        panning = self._count - self._moved_at < PAN_ADAPT_EVERY * 3
        every = min(self.adapt_every, PAN_ADAPT_EVERY) if panning else self.adapt_every
        adapt = every > 0 and self._count % every == 0
        if self._pattern is None or size != self._size or adapt:
            # Measured where the mark sits: the picture seen from the cell grid's position.
            view = np.roll(frame, (-offset[1], -offset[0]), axis=(0, 1)) if offset != (0, 0) else frame
            amplitudes = (
                self.amplitudes(view)
                if self.adapt_every > 0
                else np.full(PAYLOAD_BITS, self.strength, np.float32)
            )
            self._pattern, self._size = self._build(*size, amplitudes), size
            self._rolled = None
        self._count += 1
        positive, negative = self._pattern
        if offset != (0, 0):
            if self._rolled is None or self._rolled[0] != offset:
                shift = (offset[1], offset[0])
                self._rolled = (
                    offset,
                    np.roll(positive, shift, axis=(0, 1)),
                    np.roll(negative, shift, axis=(0, 1)),
                )
            positive, negative = self._rolled[1], self._rolled[2]
        if frame.flags.c_contiguous:
            cv2.add(frame, positive, dst=frame)
            cv2.subtract(frame, negative, dst=frame)
        else:  # OpenCV would write into a copy; do it through one and copy back
            frame[...] = cv2.subtract(cv2.add(frame, positive), negative)


class PanTracker:
    """The picture's pan since the first frame, in whole frame pixels, from its unmarked frames.

    Each frame is compared at 1/4 size with a reference frame, tile by tile (phase correlation); when
    most tiles agree on one shift, that is the pan. Anything else — people moving over a still
    background, a zoom, a cut — is no pan: the offset stays and the reference is renewed. Comparing
    with a reference rather than the previous frame keeps sub-pixel pans from being rounded away.
    """

    def __init__(self) -> None:
        self.offset: tuple[int, int] = (0, 0)
        self._reference: np.ndarray | None = None
        self._base = np.zeros(2)
        self._window: np.ndarray | None = None
        self._frame_window: np.ndarray | None = None
        self._reference_half: np.ndarray | None = None
        self._misses = 0

    def update(self, frame: np.ndarray) -> tuple[int, int]:
        """Measure one more (unmarked RGB) frame; returns the offset the mark should now have."""
        luma = cv2.cvtColor(np.ascontiguousarray(frame, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
        half = cv2.resize(luma, (luma.shape[1] // 2, luma.shape[0] // 2), interpolation=cv2.INTER_AREA)
        small = cv2.resize(half, (half.shape[1] // 2, half.shape[0] // 2), interpolation=cv2.INTER_AREA)
        half, small = half.astype(np.float32), small.astype(np.float32)
        reference, reference_half = self._reference, self._reference_half
        if reference is None or reference_half is None or reference.shape != small.shape:
            return self._renew(small, half)
        rows, cols = TRACK_TILES
        th, tw = small.shape[0] // rows, small.shape[1] // cols
        if th < 16 or tw < 16:
            return self.offset
        if self._window is None or self._window.shape != (th, tw):
            self._window = cv2.createHanningWindow((tw, th), cv2.CV_32F)
        measured = [
            cv2.phaseCorrelate(
                reference[r * th : (r + 1) * th, c * tw : (c + 1) * tw],
                small[r * th : (r + 1) * th, c * tw : (c + 1) * tw],
                self._window,
            )
            for r in range(rows)
            for c in range(cols)
        ]
        shifts = np.array([shift for shift, _ in measured])
        # Only textured tiles measure a shift (a smooth one peaks anywhere); and a static mark
        # survives over smooth content anyway, so the mark moves only with a pan of texture.
        sure = np.array([response >= TRACK_MIN_RESPONSE for _, response in measured])
        median = np.median(shifts[sure], axis=0) if sure.any() else np.zeros(2)
        agree = int((sure & (np.abs(shifts - median).max(axis=1) < TRACK_AGREE)).sum())
        if agree < TRACK_MIN_TILES:
            # People moving across, a zoom: no pan in this frame. The reference stays (a pan seen
            # again later is measured from it, nothing of it lost) unless nothing agrees for a while.
            self._misses += 1
            return self._renew(small, half) if self._misses >= TRACK_PATIENCE else self.offset
        self._misses = 0
        if np.abs(median).max() * TRACK_SCALE < 0.25:  # still: nothing to refine
            return self.offset
        # The tiles say it is a pan; the whole picture at 1/2 size measures it more exactly (small
        # tiles round sub-pixel shifts toward whole ones, and a mark lagging the pan is eroded).
        if self._frame_window is None or self._frame_window.shape != half.shape:
            self._frame_window = cv2.createHanningWindow((half.shape[1], half.shape[0]), cv2.CV_32F)
        fine = np.array(cv2.phaseCorrelate(reference_half, half, self._frame_window)[0]) / 2
        pan = fine if np.abs(fine - median).max() <= TRACK_AGREE else median
        total = self._base + pan * TRACK_SCALE
        self.offset = (int(np.round(total[0])), int(np.round(total[1])))
        if np.abs(pan).max() * TRACK_SCALE > TRACK_REANCHOR:
            self._reference, self._reference_half, self._base = small, half, total
        return self.offset

    def _renew(self, small: np.ndarray, half: np.ndarray) -> tuple[int, int]:
        """This frame becomes the reference; the offset stays where it is."""
        self._reference, self._reference_half = small, half
        self._base = np.array(self.offset, dtype=np.float64)
        self._misses = 0
        return self.offset


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


def _decode_strong(scores: np.ndarray) -> str | None:
    """`decode_scores`, then one more try: one bit anywhere (a confidently wrong one) with any of the
    `STRONG_WEAK_BITS` least reliable. Only for frames whose mark was found by its shift (coherence
    gate), where a pan has eroded the odd bit: 2**6 * 128 more candidates, a wrong id passing with
    probability about 2**13 / 2**32 per decoded shift."""
    found = decode_scores(scores)
    if found is not None:
        return found
    bits = (np.asarray(scores) > 0).astype(np.uint8)
    data = np.packbits(bits[:ID_BITS]).tobytes()
    mismatch = np.uint64(zlib.crc32(data) ^ int.from_bytes(np.packbits(bits[ID_BITS:]).tobytes(), "big"))
    weakest = np.argsort(np.abs(scores))[:STRONG_WEAK_BITS]
    flips = _FLIPS[: 2**STRONG_WEAK_BITS, :STRONG_WEAK_BITS]
    toggles = np.zeros(len(flips), np.uint64)
    for column, bit in enumerate(weakest):
        toggles[flips[:, column]] ^= _SYNDROMES[bit]
    hits = np.argwhere((toggles[:, None] ^ _SYNDROMES[None, :]) == mismatch)
    if hits.size == 0:
        return None
    costs = [np.abs(scores[weakest[flips[i]]]).sum() + abs(scores[j]) for i, j in hits]
    pattern, single = hits[int(np.argmin(costs))]
    bits[weakest[flips[pattern]]] ^= 1
    bits[single] ^= 1
    return "video_" + np.packbits(bits[:ID_BITS]).tobytes().hex()


class _ShiftedCells:
    """Cell statistics of one luma frame at every whole-pixel shift of the grid (wrapping, as the
    embedder's rolled pattern does): box means once, then each shift is a strided gather."""

    def __init__(self, luma: np.ndarray, radius: int):
        rows, cols = luma.shape[0] // CELL, luma.shape[1] // CELL
        luma = np.ascontiguousarray(luma[: rows * CELL, : cols * CELL], dtype=np.float32)
        padded = cv2.copyMakeBorder(luma, radius, radius + CELL, radius, radius + CELL, cv2.BORDER_WRAP)
        kernel = np.full((CELL, CELL), 1.0 / (CELL * CELL), np.float32)
        self.mean = cv2.filter2D(padded, -1, kernel, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
        self.square = cv2.filter2D(
            padded * padded, -1, kernel, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE
        )
        self.layout = _layout(rows, cols)
        self.radius = radius

    def scores(self, dx: int, dy: int) -> tuple[np.ndarray, float]:
        """Soft bit values of the grid moved by (dx, dy), and their coherence (~1 without a mark)."""
        rows, cols, r = self.layout.rows, self.layout.cols, self.radius
        gather = (slice(r + dy, r + dy + rows * CELL, CELL), slice(r + dx, r + dx + cols * CELL, CELL))
        mean, square = self.mean[gather], self.square[gather]
        detail = mean - cv2.blur(mean, (3, 3), borderType=cv2.BORDER_REFLECT)
        variance = np.maximum(square - mean * mean, 0.0)
        terms = (detail / (TEXTURE_K + cv2.blur(variance, (3, 3), borderType=cv2.BORDER_REFLECT))).ravel()
        scores = np.bincount(self.layout.bit_of, weights=terms * self.layout.chip, minlength=PAYLOAD_BITS)
        return scores, float(scores @ scores) / max(float(terms @ terms), 1e-12)


def find_job_id(
    frame: np.ndarray, near: tuple[int, int] | None = None, radius: int = SEARCH_RADIUS
) -> tuple[str | None, tuple[int, int] | None]:
    """The job id of a mark that followed a pan: the grid's whole-pixel shift searched within `radius`.

    With `near` (the shift found in a nearby frame) only a few pixels around it are tried, else every
    second pixel, then the best three are refined. Shifts whose cells do not agree per bit
    (coherence under MIN_COHERENCE) are not decoded at all. Returns (id, shift) or (None, None).
    """
    luma = _luma(frame)
    if (luma.shape[0] // CELL) * (luma.shape[1] // CELL) < MIN_CELLS:
        return None, None
    cells = _ShiftedCells(luma, radius)
    if near is None:
        coarse = [(dx, dy) for dx in range(-radius, radius + 1, 2) for dy in range(-radius, radius + 1, 2)]
    else:
        coarse = [
            (near[0] + dx, near[1] + dy)
            for dx in range(-3, 4)
            for dy in range(-3, 4)
            if abs(near[0] + dx) <= radius and abs(near[1] + dy) <= radius
        ]
    best = sorted(((cells.scores(dx, dy)[1], dx, dy) for dx, dy in coarse), reverse=True)[:3]
    tried: dict[tuple[int, int], tuple[float, np.ndarray]] = {}
    for _, bx, by in best:
        for dx in range(bx - 1, bx + 2):
            for dy in range(by - 1, by + 2):
                if abs(dx) <= radius and abs(dy) <= radius and (dx, dy) not in tried:
                    scores, coherence = cells.scores(dx, dy)
                    tried[(dx, dy)] = (coherence, scores)
    for shift, (coherence, scores) in sorted(tried.items(), key=lambda kv: -kv[1][0])[:4]:
        if coherence < MIN_COHERENCE:
            break
        found = _decode_strong(scores)
        if found is not None:
            return found, shift
    return None, None


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


def read_frame_ids(
    frames: list[np.ndarray], size: tuple[int, int] | None = None, probes: int = 4
) -> list[str | None]:
    """The id each frame (in video order) reads, None where none does.

    A frame is read on the cell grid first; where that fails, the grid is searched for a mark that
    followed a pan (`find_job_id`), near the shift the last found frame had. When the first `probes`
    full searches all find nothing, the video is taken to carry no moved mark and no more are made
    (an unmarked video costs 4 searches, not one a frame).
    """
    ids: list[str | None] = []
    near: tuple[int, int] | None = None
    misses = 0
    for frame in frames:
        luma = _luma(frame)
        if size is not None and (luma.shape[1], luma.shape[0]) != tuple(size):
            luma = cv2.resize(luma, tuple(size), interpolation=cv2.INTER_CUBIC)
        found = extract_job_id(luma)
        if found is not None:
            near = (0, 0)
        elif near is not None or misses < probes:
            found, shift = find_job_id(luma, near)
            if found is None and near is not None:
                found, shift = find_job_id(luma)
            if found is None:
                misses += 1
            near = shift if found is not None else near
        ids.append(found)
    return ids


def _majority(frames: list[np.ndarray], size: tuple[int, int] | None) -> WatermarkReading:
    ids = Counter(job_id for job_id in read_frame_ids(frames, size) if job_id is not None)
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
