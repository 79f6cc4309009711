"""The scene the two people stand in: one photo's own background, its people removed and the hole filled.

`background=a|b` takes that photo; `auto` takes the photo with more usable background (the share
of it no person covers, from kiss_core.scene.segmentation), or the blur when neither has much;
`blur` is the neutral backdrop made of both photos (kiss_core.scene.layout.shared_background).

The photo is scaled to cover the frame (mirrored with its person, so its light falls the same way
on them), everyone in it (the subject and anyone else) is cut out with a dilated mask and filled by
OpenCV's Telea inpainting, all at a quarter of the frame size: it costs a few milliseconds, and
upscaled it is the soft depth of field of a portrait lens, which also hides the fill's smears.
Computed once per job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import cv2
import numpy as np

from kiss_core.scene.layout import SceneLayout, mirror_matrix, shared_background
from kiss_core.scene.segmentation import PersonSegmentation

BackgroundChoice = Literal["auto", "a", "b", "blur"]
BACKGROUND_CHOICES: tuple[str, ...] = ("auto", "a", "b", "blur")
MIN_USABLE = 0.3  # auto: below this share of background in both photos, the blur is the better scene
SMALL = 4  # the scene is filled and blurred at 1/SMALL of the frame size
HOLE_THRESHOLD = 0.2  # person probability that makes a pixel part of the hole
HOLE_GROW = 0.04  # the hole is grown by this share of the small frame's height (halo, hair wisps)
DEPTH_BLUR = 0.9  # Gaussian sigma at the small size: the depth of field


def usable_background(segmentation: PersonSegmentation) -> float:
    """Share of the photo that no person covers (0..1)."""
    return float(1.0 - np.clip(segmentation.everyone, 0, 1).mean())


def choose_background(
    choice: str, segmentations: Mapping[str, PersonSegmentation]
) -> Literal["a", "b", "blur"]:
    """The scene to build for a request's `background`: auto picks the photo with more usable background."""
    if choice not in BACKGROUND_CHOICES:
        raise ValueError(f"`background` must be one of {list(BACKGROUND_CHOICES)} but is {choice!r}")
    if choice == "a":
        return "a"
    if choice == "b":
        return "b"
    if choice == "blur":
        return "blur"
    usable = {s: usable_background(segmentations[s]) for s in ("a", "b")}
    best: Literal["a", "b"] = "a" if usable["a"] >= usable["b"] else "b"
    return best if usable[best] >= MIN_USABLE else "blur"


def cover_transform(photo_shape: tuple[int, int], width: int, height: int, mirrored: bool) -> np.ndarray:
    """(2, 3) photo -> frame: the photo scaled to cover the frame, centred, mirrored if its person is."""
    photo_h, photo_w = photo_shape
    scale = max(width / photo_w, height / photo_h)
    flip = mirror_matrix(photo_w) if mirrored else np.array([[1.0, 0, 0], [0, 1.0, 0]])
    # Pixel centres: photo centre ((w-1)/2, (h-1)/2) -> frame centre.
    shift = np.array(
        [(width - 1) / 2 - scale * (photo_w - 1) / 2, (height - 1) / 2 - scale * (photo_h - 1) / 2]
    )
    cover = np.array([[scale, 0, shift[0]], [0, scale, shift[1]]])
    return cover @ np.vstack([flip, [0, 0, 1]])


def photo_scene(
    photo: np.ndarray, segmentation: PersonSegmentation, width: int, height: int, mirrored: bool
) -> np.ndarray:
    """(height, width, 3) uint8: the photo covering the frame, its people inpainted away, soft focus."""
    small_w, small_h = max(16, width // SMALL), max(16, height // SMALL)
    to_frame = cover_transform(photo.shape[:2], width, height, mirrored)
    down = np.diag([small_w / width, small_h / height, 1.0])
    to_small = (down @ np.vstack([to_frame, [0, 0, 1]]))[:2]
    # Area-shrink the photo first so the small warp does not alias.
    scale = float(np.sqrt(abs(np.linalg.det(to_small[:, :2]))))
    shrink = min(1.0, 2.0 * scale)
    base = (
        cv2.resize(photo, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA) if shrink < 1 else photo
    )
    base_to_photo = np.array([[1 / shrink, 0, 0.5 / shrink - 0.5], [0, 1 / shrink, 0.5 / shrink - 0.5]])
    from_base = (to_small @ np.vstack([base_to_photo, [0, 0, 1]]))[:2]
    small = cv2.warpAffine(
        np.ascontiguousarray(base),
        from_base,
        (small_w, small_h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    to_photo = cv2.invertAffineTransform(to_small)
    people = segmentation.mask(to_photo, (small_w, small_h), everyone=True)
    grow = max(1, round(HOLE_GROW * small_h))
    hole = cv2.dilate(
        (people > HOLE_THRESHOLD).astype(np.uint8),
        cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2),
    )
    if hole.all():  # nothing to fill from: a flat mean is the honest answer
        mean = np.round(small.reshape(-1, 3).mean(axis=0))
        filled = np.broadcast_to(mean.astype(np.uint8), small.shape).copy()
    else:
        filled = np.asarray(cv2.inpaint(small, hole, max(3, grow), cv2.INPAINT_TELEA), dtype=np.uint8)
    filled = cv2.GaussianBlur(filled, (0, 0), DEPTH_BLUR)
    return cv2.resize(filled, (width, height), interpolation=cv2.INTER_CUBIC)


def scene_background(
    choice: Literal["a", "b", "blur"],
    photos: Mapping[str, np.ndarray],
    segmentations: Mapping[str, PersonSegmentation],
    layout: SceneLayout,
) -> np.ndarray:
    """The frame's backdrop (H, W, 3) uint8 for a chosen scene ("a", "b" or "blur")."""
    if choice == "blur":
        return shared_background(photos, layout, layout.width, layout.height)
    return photo_scene(
        np.asarray(photos[choice]),
        segmentations[choice],
        layout.width,
        layout.height,
        layout.placements[choice].mirrored,
    )
