"""Shared lighting: bring the two photos' exposure and colour cast part of the way towards each other.

Two photos taken apart rarely share a light: one is warm and dark, the other cool and bright, and
side by side that reads as a collage. Per photo we measure the skin of the face (cheeks, nose and
forehead from the landmarks; `skin_mask`) in CIE Lab: mean and spread per channel.
The target of each channel is the pair's midpoint; each photo moves `strength` of the way there
with one affine map per Lab channel (a gain on the spread about the mean, then a shift of the
mean). The same map applies to the whole photo, so hair, neck and the background built from it
keep their relation to the face.

Strength 1 would give both faces identical skin statistics, which also erases a real difference in
skin tone between two people; the default (GeneratorSettings.lighting_strength) closes half the
gap. Gains are clamped so a badly exposed photo is corrected, not posterised.

The scene has a light too: once the people stand in one photo's background (kiss_core.scene.background),
each person is pulled a little towards the colour of the scene around them (`scene_light_map`: a
shift of the Lab mean, a fifth of the way for the colour cast, less for brightness, capped), so a
person from a cool room standing in a warm one picks up some of its warmth.

The map runs on 8-bit Lab through one lookup table per channel, so a 12 MP photo costs a few tens
of milliseconds; statistics come from the face crop only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from kiss_core.media.geometry import LEFT_EYE, RIGHT_EYE, face_width

SKIN_TRIM = 0.1  # share of darkest and of brightest skin pixels left out (nostrils, highlights)
GAIN_LIMITS = (0.8, 1.25)  # the spread of a channel changes by at most this factor
SCENE_PULL = np.array([0.12, 0.2, 0.2])  # share of the person->scene Lab mean gap closed (L, a, b)
SCENE_PULL_LIMIT = np.array([6.0, 4.0, 4.0])  # the most a channel's mean moves (L units, a/b units)
_LAB8_SCALE = np.array([255.0 / 100.0, 1.0, 1.0])  # float Lab -> OpenCV 8-bit Lab (L*2.55, a+128, b+128)
_LAB8_SHIFT = np.array([0.0, 128.0, 128.0])


@dataclass(frozen=True)
class SkinStats:
    """Mean and standard deviation of a face's skin in CIE Lab (L 0..100, a and b about -128..127)."""

    mean: np.ndarray  # (3,)
    std: np.ndarray  # (3,)


@dataclass(frozen=True)
class LabMap:
    """x -> mean_out + gain * (x - mean_in), per Lab channel."""

    mean_in: np.ndarray  # (3,)
    mean_out: np.ndarray  # (3,)
    gain: np.ndarray  # (3,)


def skin_mask(shape: Sequence[int], landmarks: np.ndarray) -> np.ndarray:
    """(H, W) bool: cheeks, nose and forehead of the face with these 68 landmarks.

    The face polygon (jaw line plus the brows raised by a quarter face width for the forehead),
    shrunk by 5% of the face width from its edge (hair, background), minus the eyes, brows and mouth
    each grown by 6% of the face width.
    """
    height, width = int(shape[0]), int(shape[1])
    points = np.asarray(landmarks, dtype=np.float64)
    span = face_width(points)
    up = points[27] - points[8]
    up /= max(float(np.linalg.norm(up)), 1e-9)
    forehead = points[17:27] + up * 0.25 * span
    mask: np.ndarray = np.zeros((height, width), dtype=np.uint8)
    cv2.fillConvexPoly(mask, _hull(np.vstack([points[0:17], forehead])), 255)
    shrink = max(1, round(0.05 * span))
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * shrink + 1,) * 2))
    holes: np.ndarray = np.zeros_like(mask)
    for part in (LEFT_EYE, RIGHT_EYE, slice(17, 22), slice(22, 27), slice(48, 60)):
        cv2.fillConvexPoly(holes, _hull(points[part]), 255)
    grow = max(1, round(0.06 * span))
    holes = cv2.dilate(holes, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))
    return (mask > 0) & (holes == 0)


def skin_stats(photo: np.ndarray, landmarks: np.ndarray) -> SkinStats | None:
    """Lab statistics of the face's skin, darkest and brightest tenth by L left out; None: too little skin."""
    points = np.asarray(landmarks, dtype=np.float64)
    height, width = photo.shape[:2]
    span = face_width(points)
    x0, y0 = np.floor(points.min(axis=0) - 0.5 * span).astype(int)
    x1, y1 = np.ceil(points.max(axis=0) + 0.5 * span).astype(int)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    crop = np.ascontiguousarray(photo[y0:y1, x0:x1])
    mask = skin_mask(crop.shape, points - (x0, y0))
    if int(mask.sum()) < 20:
        return None
    lab = cv2.cvtColor(crop.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)[mask].astype(np.float64)
    low, high = np.quantile(lab[:, 0], [SKIN_TRIM, 1.0 - SKIN_TRIM])
    kept = lab[(lab[:, 0] >= low) & (lab[:, 0] <= high)]
    kept = kept if len(kept) >= 20 else lab
    return SkinStats(mean=kept.mean(axis=0), std=np.maximum(kept.std(axis=0), 1e-3))


def harmonizing_maps(stats: Mapping[str, SkinStats], strength: float) -> dict[str, LabMap]:
    """Per subject the Lab map that moves its skin `strength` of the way to the pair's midpoint."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"`strength` must be in 0..1 but is {strength}")
    mid_mean = np.mean([s.mean for s in stats.values()], axis=0)
    mid_log_std = np.mean([np.log(s.std) for s in stats.values()], axis=0)  # geometric midpoint
    maps = {}
    for subject, s in stats.items():
        gain = np.exp(strength * (mid_log_std - np.log(s.std)))
        maps[subject] = LabMap(
            mean_in=s.mean,
            mean_out=s.mean + strength * (mid_mean - s.mean),
            gain=np.clip(gain, *GAIN_LIMITS),
        )
    return maps


def apply_lab_map(photo: np.ndarray, lab_map: LabMap) -> np.ndarray:
    """The photo (H, W, 3) uint8 RGB with the map applied to every pixel, through 8-bit Lab."""
    lab8 = cv2.cvtColor(np.ascontiguousarray(photo), cv2.COLOR_RGB2Lab)
    levels = np.arange(256, dtype=np.float64)[:, None]  # 8-bit level per row, a column per channel
    mean_in = lab_map.mean_in * _LAB8_SCALE + _LAB8_SHIFT
    mean_out = lab_map.mean_out * _LAB8_SCALE + _LAB8_SHIFT
    table = np.clip(np.round(mean_out + lab_map.gain * (levels - mean_in)), 0, 255).astype(np.uint8)
    lut = np.ascontiguousarray(table.reshape(256, 1, 3))
    return cv2.cvtColor(cv2.LUT(lab8, lut), cv2.COLOR_Lab2RGB)


def harmonize_photos(
    photos: Mapping[str, np.ndarray], landmarks: Mapping[str, np.ndarray], strength: float
) -> dict[str, np.ndarray]:
    """Both photos with shared lighting; unchanged when strength is 0 or a face shows too little skin."""
    if strength == 0:
        return dict(photos)
    stats = {s: skin_stats(photos[s], landmarks[s]) for s in photos}
    if any(v is None for v in stats.values()):
        return dict(photos)
    maps = harmonizing_maps(stats, strength)  # type: ignore[arg-type]
    return {s: apply_lab_map(photos[s], maps[s]) for s in photos}


def scene_light_map(person: np.ndarray, alpha: np.ndarray, scene: np.ndarray) -> LabMap | None:
    """The Lab shift that pulls a person's pixels (alpha > 0.5) part of the way to the scene's mean colour.

    `person` (H, W, 3) uint8 RGB with its `alpha` (H, W) in 0..1; `scene` the backdrop pixels around
    where they stand (any shape, RGB uint8). None when either has too few pixels to measure.
    """
    opaque = np.asarray(alpha) > 0.5
    if int(opaque.sum()) < 20 or np.asarray(scene).size < 60:
        return None
    lab = cv2.cvtColor(np.ascontiguousarray(person).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    person_mean = lab[opaque].astype(np.float64).mean(axis=0)
    around = np.asarray(scene, dtype=np.float32).reshape(-1, 1, 3) / 255.0
    scene_mean = cv2.cvtColor(around, cv2.COLOR_RGB2Lab).reshape(-1, 3).astype(np.float64).mean(axis=0)
    shift = np.clip(SCENE_PULL * (scene_mean - person_mean), -SCENE_PULL_LIMIT, SCENE_PULL_LIMIT)
    return LabMap(mean_in=person_mean, mean_out=person_mean + shift, gain=np.ones(3))


def _hull(points: np.ndarray) -> np.ndarray:
    return cv2.convexHull(np.round(points).astype(np.int32))
