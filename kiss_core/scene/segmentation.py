"""Person segmentation: which pixels of a photo are the subject (hair, ears, neck, shoulders), once per job.

MediaPipe's selfie segmenter (kiss_core.faces.mediapipe_models) gives a person probability on a
256x256 grid over the whole photo (~4 ms on one core). Two things make it usable as a cut-out:

- **The right person.** The model marks everyone. We keep the connected region that holds the
  analysed face (the largest face, kiss_core.faces) and damp the rest with a horizontal prior
  (shoulders reach ~3 face widths out), so a second person in the photo is dropped even where the
  two touch. The face's own polygon is always in: a very dark photo, where the model sees little,
  still gives a head.
- **The edge at output resolution.** `PersonSegmentation.mask` resamples the low-resolution
  probability onto any pixel grid (a layer, the frame) and refines it with a guided filter on
  that grid's own image: the edge snaps to a colour step where skin meets a wall (tight), and
  stays soft where there is none to find (hair against a busy background).

`everyone` keeps all people the model saw: the background removes them all (kiss_core.scene.background).
If the mediapipe wheel is missing, the head polygon alone is the person (the old head cut-out).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kiss_core.media.geometry import apply_affine, compose_affine, face_width
from kiss_core.scene.layout import head_mask

GRID = 256  # the segmenter's input and output size
SHOULDER_REACH = 1.6  # the person spans this many face widths either side of the face's centre...
SHOULDER_FADE = 0.8  # ...fading to nothing over this many more
KEEP_THRESHOLD = 0.5  # probability that counts as "person" when finding the face's region


@dataclass(frozen=True)
class PersonSegmentation:
    """One photo's people on the segmenter's grid: float32 (256, 256) in 0..1, grid pixel = photo * scale."""

    person: np.ndarray  # the analysed subject only (plus their head polygon)
    everyone: np.ndarray  # every person the model saw, the subject included
    photo_shape: tuple[int, int]  # (H, W) of the photo

    @property
    def to_grid(self) -> np.ndarray:
        """(2, 3) photo pixel -> grid pixel (pixel centres)."""
        height, width = self.photo_shape
        sx, sy = GRID / width, GRID / height
        return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]])

    def mask(
        self,
        to_photo: np.ndarray,
        size: tuple[int, int],
        guide: np.ndarray | None = None,
        everyone: bool = False,
    ) -> np.ndarray:
        """float32 (h, w) person alpha on a grid of `size` (w, h) whose pixel p is photo pixel to_photo @ p.

        With a `guide` (the grid's own RGB image) the edge is refined by a guided filter.
        """
        width, height = size
        grid_from_target = compose_affine(self.to_grid, to_photo)
        source = self.everyone if everyone else self.person
        alpha = cv2.warpAffine(
            source,
            grid_from_target,
            (width, height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        if guide is not None:
            grid_px = float(np.sqrt(abs(np.linalg.det(grid_from_target[:, :2]))))  # grid px per target px
            radius = max(2, round(2.0 / max(grid_px, 1e-6)))  # ~2 grid cells (the mask's own blur)
            alpha = guided_filter(guide, alpha, radius, eps=1e-3)
        return np.clip(alpha, 0.0, 1.0)


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter on the guide's luma: `source` follows the guide's edges (box filters)."""
    grey = cv2.cvtColor(np.ascontiguousarray(guide), cv2.COLOR_RGB2GRAY).astype(np.float32) * (1 / 255)
    src = np.asarray(source, dtype=np.float32)
    size = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, size, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(grey), box(src)
    cov = box(grey * src) - mean_i * mean_p
    var = box(grey * grey) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return box(a) * grey + box(b)


def segment_person(photo: np.ndarray, landmarks: np.ndarray) -> PersonSegmentation:
    """The subject's person probability (the face at `landmarks`) and everyone's, on the 256 grid."""
    photo = np.asarray(photo)
    height, width = photo.shape[:2]
    points = np.asarray(landmarks, dtype=np.float64)
    to_grid = PersonSegmentation(np.zeros(0), np.zeros(0), (height, width)).to_grid
    grid_points = apply_affine(to_grid, points)
    head = head_mask(grid_points, (GRID, GRID))
    everyone = _model_probability(photo)
    if everyone is None:  # no model: the head cut-out, as before segmentation
        return PersonSegmentation(person=head, everyone=head, photo_shape=(height, width))
    # The connected region(s) of "person" that touch the face.
    count, labels = cv2.connectedComponents((everyone > KEEP_THRESHOLD).astype(np.uint8), connectivity=8)
    touching = np.unique(labels[(head > 0.5) & (labels > 0)])
    region = np.isin(labels, touching).astype(np.float32) if count > 1 else np.zeros_like(everyone)
    region = cv2.GaussianBlur(cv2.dilate(region, np.ones((5, 5), np.uint8)), (0, 0), 1.5)
    # Shoulders reach so far either side of the face; beyond, anyone touching is someone else.
    across = float(face_width(grid_points))
    centre_x = float(grid_points[:, 0].mean())
    distance = np.abs(np.arange(GRID, dtype=np.float32) - centre_x) / max(across, 1.0)
    band = np.clip(1.0 - (distance - SHOULDER_REACH) / SHOULDER_FADE, 0.0, 1.0)[None, :]
    person = np.maximum(everyone * region * band, head)
    return PersonSegmentation(
        person=person.astype(np.float32),
        everyone=np.maximum(everyone, head).astype(np.float32),
        photo_shape=(height, width),
    )


def _model_probability(photo: np.ndarray) -> np.ndarray | None:
    """(256, 256) float32 person probability from the selfie segmenter; None when its wheel is missing."""
    from kiss_core.faces.mediapipe_models import SELFIE_SEGMENTATION, MediaPipeMissing, tflite_model

    try:
        model = tflite_model(SELFIE_SEGMENTATION)
    except MediaPipeMissing:
        return None
    # MediaPipe's selfie_segmentation graph feeds RGB scaled to [0, 1] (ImageToTensorCalculator, range 0..1).
    small = cv2.resize(np.ascontiguousarray(photo), (GRID, GRID), interpolation=cv2.INTER_AREA)
    (probability,) = model(small[None].astype(np.float32) * (1 / 255))
    return np.ascontiguousarray(probability[0, ..., 0], dtype=np.float32)
