"""The views the age estimate is taken over, and the canonical form each chip is put in first.

The age model (kiss_core.safety.age) reads colour, brightness and fine texture as age cues, so a
grayscale copy of an adult's photo used to read up to 7 years younger, a 30 % brighter one up to 6,
and a JPEG at quality 10 up to 11 years *older* (the unsafe direction). bench/age_stability.py
measures it. Three things make the estimate hold still:

- **A canonical chip** (`canonical_chip`): the chip's luma is standardised (mean and spread over the
  face, an ellipse inside the chip) to fixed values, so brightness and contrast no longer move it;
  the chip's own average colour cast is replaced by one fixed skin tint, and only 60 % of its local
  colour variation (lips, cheeks) is kept. A grayscale photo then reaches the model as the same
  tinted face a colour photo gives, less those local colour differences, instead of an unnatural
  bluish-grey face (the model's input means are skin-coloured) that it read years younger.
- **Several views** (`view_points`): the 5 alignment points shifted by about 3 % of the eye
  distance (at least a pixel) right, left, down and up; with the mirror image of each, eight chips.
  The model moves by up to ~4 years for a 1-pixel shift of the crop; their average does not. (The
  unshifted crop adds nothing measurable to those four and costs two more model runs.)
- **Deblocking heavy JPEG** (`jpeg_blockiness`, `deblock`): a strongly compressed photo has steps at
  the edges of JPEG's 8x8 blocks that the model reads as wrinkles. When the face region shows them
  (the steps on the 8-pixel grid are >= 1.8 times the average step; ordinary photos measure
  0.9-1.5, JPEG quality 10 measures 2.2-6.5), the steps under 60 grey levels are smoothed over the
  two pixels either side of each block edge before the chips are cut. Photos without blocking are
  not touched.

The constants below were chosen by measuring bench/age_stability.py's face set (and the same faces
framed differently, as a check against fitting them) over a small grid; docs/responsible-use.md has
the before/after table. Change them only with that bench rerun.
"""

from __future__ import annotations

import numpy as np

# ITU-R BT.601 luma, as PIL's grayscale conversion uses.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Canonical luma over the face ellipse (grey levels) ...
CANONICAL_LUMA_MEAN = 95.0
CANONICAL_LUMA_STD = 45.0
# ... the one skin tint every chip gets (RGB minus luma: the average over the colour faces measured) ...
CANONICAL_SKIN_CHROMA = np.array([38.0, -11.0, -43.0], dtype=np.float32)
# ... and the share of the chip's own colour variation around its average that is kept.
LOCAL_CHROMA = 0.6
# View shifts: this share of the eye distance, at least one pixel, right/left/down/up.
SHIFT_FRACTION = 0.03
SHIFTS = ((1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0))
# JPEG blocking.
JPEG_BLOCK = 8
BLOCKINESS_THRESHOLD = 1.8
DEBLOCK_MAX_STEP = 60.0
# Share of a block-edge step moved onto each of the two pixels either side (outer, inner): 1.5 x (1/8, 3/8).
DEBLOCK_WEIGHTS = (1.5 / 8, 1.5 * 3 / 8)


def face_ellipse(size: int) -> np.ndarray:
    """Boolean mask (size, size) of the face inside a model chip (no hair, background or neck)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) * (64.0 / size)
    return ((xx - 31.5) / 22.0) ** 2 + ((yy - 34.0) / 26.0) ** 2 <= 1.0


def canonical_chip(chip: np.ndarray, ellipse: np.ndarray) -> np.ndarray:
    """The chip (RGB uint8) with standard luma and the canonical skin tint; see the module docstring."""
    values = chip.astype(np.float32)
    luma = values @ LUMA
    face = luma[ellipse]
    spread = max(float(face.std()), 1.0)
    standard = (luma - float(face.mean())) * (CANONICAL_LUMA_STD / spread) + CANONICAL_LUMA_MEAN
    chroma = values - luma[..., None]
    chroma -= chroma[ellipse].mean(axis=0)
    out = standard[..., None] + CANONICAL_SKIN_CHROMA + LOCAL_CHROMA * chroma
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def view_points(five: np.ndarray) -> list[np.ndarray]:
    """The 5-point shapes the views are cut from: the detected one shifted in four directions."""
    step = max(1.0, SHIFT_FRACTION * float(np.linalg.norm(five[0] - five[2])))
    return [five + np.array(shift) * step for shift in SHIFTS]


def face_region(shape: tuple[int, ...], five: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) around the face, 2 eye distances each way from the centre of the 5 points."""
    centre = five.mean(axis=0)
    radius = max(16.0, 2.0 * float(np.linalg.norm(five[0] - five[2])))
    height, width = shape[:2]
    x0, y0 = (max(0, int(v - radius)) for v in centre)
    x1 = min(width, int(centre[0] + radius))
    y1 = min(height, int(centre[1] + radius))
    return x0, y0, x1, y1


def jpeg_blockiness(image: np.ndarray, five: np.ndarray) -> tuple[float, int, int]:
    """(ratio, phase_x, phase_y) of JPEG blocking around the face.

    ratio: mean luma step across the strongest 8-pixel grid line, over the typical (median) step,
    in x plus y. phase: the image column (row) modulo 8 that the block edge follows (the step is
    between that pixel and the next), so a photo cropped after compression is still found.
    """
    x0, y0, x1, y1 = face_region(image.shape, five)
    if x1 - x0 < 4 * JPEG_BLOCK or y1 - y0 < 4 * JPEG_BLOCK:
        return 0.0, 0, 0
    luma = image[y0:y1, x0:x1].astype(np.float32) @ LUMA
    steps_x = np.abs(np.diff(luma, axis=1)).mean(axis=0)
    steps_y = np.abs(np.diff(luma, axis=0)).mean(axis=1)

    def per_phase(steps: np.ndarray, origin: int) -> np.ndarray:
        phase = (np.arange(steps.size) + origin) % JPEG_BLOCK
        return np.array([steps[phase == k].mean() for k in range(JPEG_BLOCK)])

    phases_x, phases_y = per_phase(steps_x, x0), per_phase(steps_y, y0)
    kx, ky = int(phases_x.argmax()), int(phases_y.argmax())
    typical = float(np.median(phases_x) + np.median(phases_y))
    return float(phases_x[kx] + phases_y[ky]) / max(typical, 1e-6), kx, ky


def deblock(region: np.ndarray, phase_x: int, phase_y: int) -> np.ndarray:
    """`region` (uint8) with the steps at JPEG block edges smoothed; phases relative to its origin.

    A step d between pixels p0|q0 (p1 p0 | q0 q1) is spread: p1 += w1 d, p0 += w0 d, q0 -= w0 d,
    q1 -= w1 d; steps of DEBLOCK_MAX_STEP and more are real edges and stay.
    """
    values = region.astype(np.float32)
    outer, inner = DEBLOCK_WEIGHTS
    for axis, phase in ((1, phase_x), (0, phase_y)):
        moved = np.moveaxis(values, axis, 0)  # a view: writes go to `values`
        for edge in range(phase % JPEG_BLOCK, moved.shape[0] - 2, JPEG_BLOCK):
            if edge < 1:
                continue
            step = moved[edge + 1] - moved[edge]
            step = np.where(np.abs(step) < DEBLOCK_MAX_STEP, step, 0.0)
            moved[edge - 1] += outer * step
            moved[edge] += inner * step
            moved[edge + 1] -= inner * step
            moved[edge + 2] -= outer * step
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def deblocked_if_blocky(image: np.ndarray, five: np.ndarray) -> np.ndarray:
    """`image` itself, or (when the face region shows JPEG blocking) a copy with that region deblocked."""
    ratio, phase_x, phase_y = jpeg_blockiness(image, five)
    if ratio < BLOCKINESS_THRESHOLD:
        return image
    # The chips reach about 1.3 eye distances from the face centre (plus the view shifts): 3 is ample.
    centre = five.mean(axis=0)
    radius = 3.0 * max(16.0, float(np.linalg.norm(five[0] - five[2])))
    height, width = image.shape[:2]
    x0, y0 = (max(0, int(v - radius)) for v in centre)
    x1, y1 = min(width, int(centre[0] + radius)), min(height, int(centre[1] + radius))
    out = image.copy()
    out[y0:y1, x0:x1] = deblock(image[y0:y1, x0:x1], (phase_x - x0) % JPEG_BLOCK, (phase_y - y0) % JPEG_BLOCK)
    return out
