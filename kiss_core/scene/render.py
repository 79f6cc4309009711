"""The preview compositor: animates the two photos along the plan over a shared background, on the CPU.

Per subject a head layer is cut out once: the photo around the head, shrunk to about output size,
with a feathered head mask (jaw, a cap for forehead and hair, the neck) as alpha, and a
triangulation of its landmarks plus anchors — points above the brows for the forehead and hair,
the cap's outline, a ring around the head and the layer's corners. Each frame warps that small
RGBA layer piecewise-affinely (kiss_core.scene.warp) from its own points onto the plan's points of that
frame: the landmarks carry the whole motion (layout, tilt, shift, turn, closing eyelids, pursed
lips), the anchors follow the head and its turn (SubjectTrack.follow). Layers are blended back
subject first, in the plan's occlusion order. The turn foreshortens the far cheek into a thin
band at the silhouette, which would turn the mask's feather into a hard edge; so each layer's
leading edge (the far cheek, that lies over the partner at contact) fades out over a band in the
frame instead, and the faces meet in a soft seam.

Colour is left alone here: the photos are harmonised before rendering (kiss_core.scene.lighting).
Everything is deterministic and sub-pixel exact, so nothing flickers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from kiss_core.media.geometry import apply_affine, eye_centers
from kiss_core.scene.choreography import KissPlan, SubjectTrack, smoothstep
from kiss_core.scene.layout import (
    MIRROR_PERMUTATION,
    affine_scale,
    head_mask,
    head_polygon,
    shared_background,
)
from kiss_core.scene.warp import PiecewiseAffineWarp, border_points
from kiss_core.schemas import SubjectAnalysis

# A turned face fades out between these head-local positions (in head radii from the turn axis,
# towards the partner): it starts just past the leading lip corner at full turn and ends at the
# silhouette, so the partner's lips and cheek show through the far cheek, not under a cut edge.
SEAM_FROM, SEAM_TO = 0.72, 1.0


@dataclass(frozen=True)
class HeadLayer:
    """A subject's cut-out at about output resolution: RGBA pixels, the map back to the photo, its mesh."""

    rgba: np.ndarray  # (h, w, 4) uint8, alpha = feathered head mask
    to_photo: np.ndarray  # (2, 3) affine, layer pixel -> photo pixel
    anchors: np.ndarray  # (M, 2) photo pixels: forehead, hair, ring, layer corners
    warp: PiecewiseAffineWarp  # over the layer's points: 68 landmarks (frame iBUG order), then anchors

    def targets(self, track: SubjectTrack) -> np.ndarray:
        """(T, 68 + M, 2) frame positions of the mesh points over the clip."""
        return np.concatenate([track.landmarks, track.follow(self.anchors)], axis=1)


def head_anchors(landmarks: np.ndarray) -> np.ndarray:
    """Photo points that hold the head's shape beyond the landmarks: forehead rows, hair cap, a ring."""
    points = np.asarray(landmarks, dtype=np.float64)
    left, right = eye_centers(points)
    eye_distance = float(np.hypot(*(right - left))) or 1.0
    ux = (right - left) / eye_distance
    uy = np.array([-ux[1], ux[0]])
    if float(uy @ (points[8] - (left + right) / 2)) < 0:
        uy = -uy
    brows = points[17:27]
    forehead = np.concatenate([brows - k * eye_distance * uy for k in (0.45, 0.95)])
    outline = head_polygon(points)  # jaw (17), cap (24), neck (4)
    cap = outline[17:41][2:-2:2]
    middle = outline.mean(axis=0)
    ring_angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    half = np.array([np.ptp(outline @ ux), np.ptp(outline @ uy)]) / 2
    centre = middle + ux * ((outline @ ux).max() + (outline @ ux).min() - 2 * middle @ ux) / 2
    centre = centre + uy * ((outline @ uy).max() + (outline @ uy).min() - 2 * centre @ uy) / 2
    ring = (
        centre
        + np.outer(np.cos(ring_angles) * half[0] * 1.2, ux)
        + np.outer(np.sin(ring_angles) * half[1] * 1.12, uy)
    )
    return np.concatenate([forehead, cap, ring])


class PreviewCompositor:
    """Renders a KissPlan from the two photos. Stateless between calls; safe to share."""

    def __init__(self, feather_px: int = 10):
        if feather_px < 0:
            raise ValueError(f"`feather_px` must be >= 0 but is {feather_px}")
        self.feather_px = feather_px  # softness of the head edge, in output pixels (a Gaussian sigma)

    def head_layers(
        self, plan: KissPlan, photos: Mapping[str, np.ndarray], analyses: Mapping[str, SubjectAnalysis]
    ) -> dict[str, HeadLayer]:
        """Cut out both heads once: crop, shrink to ~output size, feathered mask, mesh.

        Shrinking a big photo here (area averaging) keeps the per-frame warp from aliasing and makes
        the mask blur cheap whatever the photo's resolution.
        """
        layers = {}
        for subject in ("a", "b"):
            photo = _check_photo(photos[subject], subject)
            landmarks = np.asarray(analyses[subject].landmarks, dtype=np.float64)
            height, width = photo.shape[:2]
            track = plan.tracks[subject]
            transforms = track.transforms
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
            to_layer = np.array([[fx, 0, -to_photo[0, 2] * fx], [0, fy, -to_photo[1, 2] * fy]])
            layer_points = apply_affine(to_layer, landmarks)
            mask = head_mask(layer_points, crop.shape[:2])
            sigma = self.feather_px / max(most / factor, 1e-6)  # output pixels -> layer pixels
            if sigma > 0.3:
                # Pull the outline in by one sigma, then blur: the fade ends near the outline, not outside it.
                radius = round(sigma)
                if radius >= 1:
                    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
                    mask = cv2.erode(mask, kernel)
                mask = cv2.GaussianBlur(mask, (0, 0), sigma)
            alpha = np.round(mask * 255).astype(np.uint8)
            h, w = crop.shape[:2]
            ring = apply_affine(to_layer, head_anchors(landmarks))
            ring = np.clip(ring, 0, [w - 1, h - 1])
            anchors_layer = np.concatenate([ring, border_points(w, h)])
            # Mesh points in the frame's iBUG order (a mirrored subject's indices are permuted).
            ordered = layer_points[MIRROR_PERMUTATION] if track.mirrored else layer_points
            mesh = PiecewiseAffineWarp(np.concatenate([ordered, anchors_layer]))
            layers[subject] = HeadLayer(
                rgba=np.dstack([crop, alpha]),
                to_photo=to_photo,
                anchors=apply_affine(to_photo, anchors_layer),
                warp=mesh,
            )
        return layers

    def render(
        self, plan: KissPlan, photos: Mapping[str, np.ndarray], analyses: Mapping[str, SubjectAnalysis]
    ) -> Iterator[np.ndarray]:
        """Frames (H, W, 3) uint8 in order, one per plan frame. Each yielded array is a fresh buffer."""
        photos = {s: _check_photo(photos[s], s) for s in ("a", "b")}
        background = shared_background(photos, plan.layout, plan.width, plan.height)
        layers = self.head_layers(plan, photos, analyses)
        targets = {s: layers[s].targets(plan.tracks[s]) for s in ("a", "b")}
        seam = {s: _seam_weight(plan.tracks[s]) for s in ("a", "b")}
        order = (("b", "a"), ("a", "b"))  # index: plan.front value (0 = a on top, so b is drawn first)
        size = (plan.width, plan.height)
        for t in range(plan.frame_count):
            frame = background.copy()
            back, front = order[int(plan.front[t])]
            for subject in (back, front):
                layer, track = layers[subject], plan.tracks[subject]
                warped = layer.warp.warp(layer.rgba, targets[subject][t], output_size=size)
                if warped.image.size == 0:
                    continue
                alpha = warped.image[..., 3].astype(np.float32) * (1 / 255)
                if seam[subject][t] > 0:
                    alpha *= _seam_fade(track, t, warped.origin, alpha.shape, seam[subject][t])
                x0, y0 = warped.origin
                h, w = alpha.shape
                roi = frame[y0 : y0 + h, x0 : x0 + w]
                # cv2.blendLinear: roi*(1-a) + fg*a in one C++ pass, saturating to uint8.
                roi[...] = cv2.blendLinear(
                    np.ascontiguousarray(warped.image[..., :3]), roi, alpha, 1.0 - alpha
                )
            yield frame


def _seam_weight(track: SubjectTrack) -> np.ndarray:
    """(T,) how strongly the leading edge fades: follows the turn towards the partner (0 while frontal)."""
    peak = float(np.abs(track.turn).max())
    return np.clip(track.turn / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(track.turn)


def _seam_fade(
    track: SubjectTrack, t: int, origin: tuple[int, int], shape: tuple[int, int], weight: float
) -> np.ndarray:
    """(h, w) float32 factor for a window of the frame: 1 inside, fading to 0 at the leading silhouette."""
    inverse = cv2.invertAffineTransform(track.motion[t])[0]  # frame -> layout x
    h, w = shape
    xs = np.arange(origin[0], origin[0] + w, dtype=np.float32)[None, :]
    ys = np.arange(origin[1], origin[1] + h, dtype=np.float32)[:, None]
    u = (inverse[0] * xs + inverse[1] * ys + (inverse[2] - track.head_center[0])) * (
        track.toward / track.head_radius
    )
    fade = smoothstep((u - SEAM_FROM) / (SEAM_TO - SEAM_FROM)).astype(np.float32)
    return 1.0 - np.float32(weight) * fade


def _check_photo(photo: np.ndarray, subject: str) -> np.ndarray:
    photo = np.asarray(photo)
    if photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3:
        raise ValueError(
            f"subject {subject}: photo must be RGB uint8 (H, W, 3) but is {photo.dtype} {photo.shape}"
        )
    return np.ascontiguousarray(photo)
