"""The preview compositor: animates the two photos along the plan over a shared background, on the CPU.

Per subject a head layer (the photo plus a feathered head mask, colour-matched towards the other
subject) is cut out once; each frame only warps that small RGBA layer with the frame's affine
into the region of the frame it lands on and alpha-blends it there, back subject first. The
background is computed once. So a frame costs two small warps and two small blends.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from kiss_core.choreography import KissPlan
from kiss_core.compose import affine_scale, head_mask, head_polygon, shared_background
from kiss_core.geometry import compose_affine
from kiss_core.schemas import SubjectAnalysis


@dataclass(frozen=True)
class HeadLayer:
    """A subject's cut-out at about output resolution: RGBA pixels and the map back to the photo."""

    rgba: np.ndarray  # (h, w, 4) uint8, alpha = feathered head mask
    to_photo: np.ndarray  # (2, 3) affine, layer pixel -> photo pixel


class PreviewCompositor:
    """Renders a KissPlan from the two photos. Stateless between calls; safe to share."""

    def __init__(self, feather_px: int = 10, harmonize: float = 0.5):
        if feather_px < 0:
            raise ValueError(f"`feather_px` must be >= 0 but is {feather_px}")
        if not 0.0 <= harmonize <= 1.0:
            raise ValueError(f"`harmonize` must be in 0..1 but is {harmonize}")
        self.feather_px = feather_px  # softness of the head edge, in output pixels (a Gaussian sigma)
        self.harmonize = harmonize  # 0: colours as shot; 1: both faces pulled to one mean colour

    def head_layers(
        self, plan: KissPlan, photos: Mapping[str, np.ndarray], analyses: Mapping[str, SubjectAnalysis]
    ) -> dict[str, HeadLayer]:
        """Cut out both heads once: crop, shrink to ~output size, feathered mask, colours matched.

        Shrinking a big photo here (area averaging) keeps the per-frame warp from aliasing and makes
        the mask blur cheap whatever the photo's resolution.
        """
        layers, means = {}, {}
        for subject in ("a", "b"):
            photo = _check_photo(photos[subject], subject)
            landmarks = np.asarray(analyses[subject].landmarks, dtype=np.float64)
            height, width = photo.shape[:2]
            transforms = plan.tracks[subject].transforms
            most = max(affine_scale(transforms[0]), affine_scale(transforms[plan.contact_frame]))
            factor = min(1.0, 1.25 * most)  # layer pixels per photo pixel
            pad = (3 * self.feather_px + 4) / max(most, 1e-6)  # feather room, in photo pixels
            outline = head_polygon(landmarks)
            x0, y0 = np.floor(outline.min(axis=0) - pad).astype(int)
            x1, y1 = np.ceil(outline.max(axis=0) + pad).astype(int) + 1
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
            if x1 - x0 < 2 or y1 - y0 < 2:
                raise ValueError(f"subject {subject}: the head lies outside the photo")
            crop = photo[y0:y1, x0:x1]
            if factor < 1:
                size = (max(2, round((x1 - x0) * factor)), max(2, round((y1 - y0) * factor)))
                crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
            fx, fy = crop.shape[1] / (x1 - x0), crop.shape[0] / (y1 - y0)
            # Pixel-centre convention of cv2.resize: src = (dst + 0.5) / f - 0.5.
            to_photo = np.array([[1 / fx, 0, x0 + 0.5 / fx - 0.5], [0, 1 / fy, y0 + 0.5 / fy - 0.5]])
            layer_points = np.c_[
                (landmarks[:, 0] - to_photo[0, 2]) * fx, (landmarks[:, 1] - to_photo[1, 2]) * fy
            ]
            mask = head_mask(layer_points, crop.shape[:2])
            sigma = self.feather_px / max(most / factor, 1e-6)  # output pixels -> layer pixels
            if sigma > 0.3:
                # Pull the outline in by one sigma, then blur: the fade ends near the outline, not outside it.
                radius = round(sigma)
                if radius >= 1:
                    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
                    mask = cv2.erode(mask, kernel)
                mask = cv2.GaussianBlur(mask, (0, 0), sigma)
            core = mask > 0.9
            means[subject] = (crop[core] if core.any() else crop).reshape(-1, 3).mean(axis=0)
            alpha = np.round(mask * 255).astype(np.uint8)
            layers[subject] = HeadLayer(rgba=np.dstack([crop, alpha]), to_photo=to_photo)

        if self.harmonize:
            # One lighting: pull each face's mean colour part of the way towards the pair's mean.
            target = (means["a"] + means["b"]) / 2
            for subject, layer in layers.items():
                gain = np.clip((target / np.maximum(means[subject], 1.0)) ** self.harmonize, 0.75, 1.33)
                rgb = layer.rgba[..., :3].astype(np.float32) * gain.astype(np.float32)
                layer.rgba[..., :3] = np.clip(rgb, 0, 255).astype(np.uint8)
        return layers

    def render(
        self, plan: KissPlan, photos: Mapping[str, np.ndarray], analyses: Mapping[str, SubjectAnalysis]
    ) -> Iterator[np.ndarray]:
        """Frames (H, W, 3) uint8 in order, one per plan frame. Each yielded array is a fresh buffer."""
        photos = {s: _check_photo(photos[s], s) for s in ("a", "b")}
        background = shared_background(photos, plan.layout, plan.width, plan.height)
        layers = self.head_layers(plan, photos, analyses)
        order = (("b", "a"), ("a", "b"))  # index: plan.front value (0 = a on top, so b is drawn first)
        for t in range(plan.frame_count):
            frame = background.copy()
            for subject in order[int(plan.front[t])]:
                _blend_layer(frame, layers[subject], plan.tracks[subject].transforms[t])
            yield frame


def _blend_layer(frame: np.ndarray, layer: HeadLayer, transform: np.ndarray) -> None:
    """Warp the layer into the part of the frame it covers and alpha-blend it there, in place."""
    height, width = frame.shape[:2]
    h, w = layer.rgba.shape[:2]
    crop_to_frame = compose_affine(np.asarray(transform, dtype=np.float64), layer.to_photo)
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], dtype=np.float64)
    mapped = corners @ crop_to_frame[:, :2].T + crop_to_frame[:, 2]
    fx0, fy0 = np.floor(mapped.min(axis=0)).astype(int) - 1
    fx1, fy1 = np.ceil(mapped.max(axis=0)).astype(int) + 2
    fx0, fy0, fx1, fy1 = max(fx0, 0), max(fy0, 0), min(fx1, width), min(fy1, height)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    to_roi = crop_to_frame.copy()
    to_roi[:, 2] -= (fx0, fy0)
    warped = cv2.warpAffine(
        layer.rgba,
        to_roi,
        (fx1 - fx0, fy1 - fy0),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0, 0),
    )
    roi = frame[fy0:fy1, fx0:fx1]
    alpha = warped[..., 3].astype(np.float32) * (1 / 255)
    # cv2.blendLinear: roi*(1-a) + fg*a in one C++ pass, saturating to uint8.
    roi[...] = cv2.blendLinear(warped[..., :3], roi, alpha, 1.0 - alpha)


def _check_photo(photo: np.ndarray, subject: str) -> np.ndarray:
    photo = np.asarray(photo)
    if photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3:
        raise ValueError(
            f"subject {subject}: photo must be RGB uint8 (H, W, 3) but is {photo.dtype} {photo.shape}"
        )
    return np.ascontiguousarray(photo)
