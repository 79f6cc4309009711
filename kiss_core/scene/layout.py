"""Scene composition: both people in one frame, the same size, eyes level, facing each other.

The layout is the first frame of every plan (and the composed first frame a video model starts
from). It is pure geometry on the 68 iBUG landmarks: a mirror where a face looks the wrong way,
then a similarity transform per subject that matches inter-ocular distance and eye height.
Frame landmarks are always reported in iBUG order (index 0 on the image's left), so a mirrored
subject's landmark indices are permuted along with the flip.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from kiss_core.media.geometry import JAW, apply_affine, compose_affine, eye_centers, similarity_from_points
from kiss_core.schemas import SubjectAnalysis

# The OpenFace mean face (iBUG 68 points), normalised so that the points span ~[0, 1] x [0, 1.06] with
# y down. (tests/support/mean_face.py places it in a box as an analysis of "no one".)
# fmt: off
MEAN_FACE_68 = np.array([
    (0.0792, 0.3392), (0.0829, 0.4570), (0.0968, 0.5756), (0.1221, 0.6919), (0.1687, 0.8003),
    (0.2398, 0.8957), (0.3257, 0.9771), (0.4223, 1.0433), (0.5318, 1.0608), (0.6413, 1.0398),
    (0.7381, 0.9723), (0.8244, 0.8896), (0.8948, 0.7925), (0.9394, 0.6815), (0.9611, 0.5622),
    (0.9706, 0.4418), (0.9712, 0.3221), (0.1638, 0.2492), (0.2178, 0.2043), (0.2913, 0.1924),
    (0.3675, 0.2036), (0.4393, 0.2331), (0.5864, 0.2281), (0.6602, 0.1959), (0.7375, 0.1824),
    (0.8132, 0.1928), (0.8708, 0.2353), (0.5153, 0.3186), (0.5162, 0.3962), (0.5171, 0.4738),
    (0.5182, 0.5532), (0.4337, 0.6041), (0.4755, 0.6208), (0.5207, 0.6343), (0.5659, 0.6188),
    (0.6071, 0.6016), (0.2524, 0.3311), (0.2987, 0.3026), (0.3557, 0.3030), (0.4037, 0.3387),
    (0.3525, 0.3500), (0.2968, 0.3505), (0.6313, 0.3341), (0.6791, 0.2965), (0.7360, 0.2947),
    (0.7829, 0.3213), (0.7403, 0.3418), (0.6850, 0.3437), (0.3532, 0.7462), (0.4146, 0.7191),
    (0.4777, 0.7068), (0.5227, 0.7171), (0.5698, 0.7054), (0.6352, 0.7157), (0.6995, 0.7394),
    (0.6394, 0.8052), (0.5764, 0.8354), (0.5254, 0.8417), (0.4764, 0.8375), (0.4138, 0.8100),
    (0.3801, 0.7500), (0.4780, 0.7451), (0.5234, 0.7489), (0.5711, 0.7433), (0.6724, 0.7442),
    (0.5725, 0.7766), (0.5240, 0.7834), (0.4776, 0.7785),
], dtype=np.float64)
# fmt: on


# iBUG index of each landmark's mirror partner (left <-> right), so a flipped face keeps the convention.
MIRROR_PERMUTATION = np.array(
    [
        *range(16, -1, -1),  # jaw
        *range(26, 16, -1),  # brows
        *(27, 28, 29, 30),  # nose bridge
        *(35, 34, 33, 32, 31),  # nostrils
        *(45, 44, 43, 42, 47, 46),  # image-left eye <- image-right eye
        *(39, 38, 37, 36, 41, 40),  # image-right eye <- image-left eye
        *(54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55),  # outer lips
        *(64, 63, 62, 61, 60, 67, 66, 65),  # inner lips
    ],
    dtype=np.intp,
)

# Where faces go, as fractions of the frame. The inter-ocular distance follows the frame height, but is
# capped by the width so two faces plus the gap between them still fit in a narrow (portrait) frame.
INTEROCULAR_OF_HEIGHT = 0.12
INTEROCULAR_OF_WIDTH = 0.075
EYE_LINE_OF_HEIGHT = 0.44
START_SEPARATION_IN_EYES = 5.0  # distance between the two eye midpoints at the start, in eye distances


@dataclass(frozen=True)
class SubjectPlacement:
    """One subject in the scene at the start pose."""

    subject: str
    mirrored: bool
    transform: np.ndarray  # (2, 3) photo pixels -> frame pixels, the mirror included
    landmarks: np.ndarray  # (68, 2) frame pixels, iBUG order


@dataclass(frozen=True)
class SceneLayout:
    """Both subjects placed in one frame: same eye distance, same eye height, facing each other."""

    width: int
    height: int
    interocular: float  # target eye distance in frame pixels
    eye_y: float  # target eye height in frame pixels
    placements: dict[str, SubjectPlacement]


def affine_scale(affine: np.ndarray) -> float:
    """The (geometric mean) scale factor of a 2x3 affine."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(affine)[:2, :2]))))


def mirror_matrix(image_width: int) -> np.ndarray:
    """Horizontal flip of a photo, in pixel-centre coordinates (x -> W - 1 - x)."""
    return np.array([[-1.0, 0.0, image_width - 1.0], [0.0, 1.0, 0.0]])


def needs_mirror(subject: str, yaw: float) -> bool:
    """a stands on the left and must face right (yaw >= 0); b on the right must face left (yaw <= 0)."""
    return yaw < 0 if subject == "a" else yaw > 0


def frame_landmarks(transform: np.ndarray, photo_landmarks: np.ndarray, mirrored: bool) -> np.ndarray:
    """Photo landmarks moved into the frame, re-indexed so the iBUG left/right convention holds."""
    points = apply_affine(transform, photo_landmarks)
    return points[..., MIRROR_PERMUTATION, :] if mirrored else points


def layout_scene(analyses: Mapping[str, SubjectAnalysis], width: int, height: int) -> SceneLayout:
    """Place subject a on the left facing right and b on the right facing left, eyes matched."""
    missing = {"a", "b"} - set(analyses)
    if missing:
        raise ValueError(f"`analyses` needs subjects 'a' and 'b' but lacks {sorted(missing)}")
    if width <= 0 or height <= 0:
        raise ValueError(f"`width` and `height` must be positive but are {width} and {height}")
    interocular = min(INTEROCULAR_OF_HEIGHT * height, INTEROCULAR_OF_WIDTH * width)
    eye_y = EYE_LINE_OF_HEIGHT * height
    separation = START_SEPARATION_IN_EYES * interocular
    centres_x = {"a": width / 2 - separation / 2, "b": width / 2 + separation / 2}

    placements: dict[str, SubjectPlacement] = {}
    for subject in ("a", "b"):
        analysis = analyses[subject]
        photo_points = np.asarray(analysis.landmarks, dtype=np.float64)
        if photo_points.shape != (68, 2):
            raise ValueError(f"subject {subject}: 68 landmarks expected but got shape {photo_points.shape}")
        mirrored = needs_mirror(subject, analysis.pose.yaw)
        flip = mirror_matrix(analysis.image_width) if mirrored else np.array([[1.0, 0, 0], [0, 1.0, 0]])
        # Eye centres after the flip, in iBUG order (image-left first).
        left, right = eye_centers(frame_landmarks(flip, photo_points, mirrored))
        cx = centres_x[subject]
        targets = (np.array([cx - interocular / 2, eye_y]), np.array([cx + interocular / 2, eye_y]))
        transform = compose_affine(similarity_from_points((left, right), targets), flip)
        placements[subject] = SubjectPlacement(
            subject=subject,
            mirrored=mirrored,
            transform=transform,
            landmarks=frame_landmarks(transform, photo_points, mirrored),
        )
    return SceneLayout(
        width=width, height=height, interocular=interocular, eye_y=eye_y, placements=placements
    )


def head_polygon(landmarks: np.ndarray, neck: bool = True) -> np.ndarray:
    """A convex outline of the head in the landmarks' own frame: jaw, a cap for forehead and hair, a neck.

    The cap is a half-ellipse over the temples reaching ~1.9 eye distances above the eyes, which
    covers the forehead and most hairstyles without knowing where the hair really ends.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    left, right = eye_centers(points)
    across = right - left
    eye_distance = float(np.hypot(*across)) or 1.0
    ux = across / eye_distance
    uy = np.array([-ux[1], ux[0]])  # "down" in the face's own frame (image y points down)
    if float(uy @ (points[8] - (left + right) / 2)) < 0:  # a mirrored set: keep "down" towards the chin
        uy = -uy
    temple_l, temple_r = points[0], points[16]
    centre = (temple_l + temple_r) / 2
    half_width = 1.08 * float(np.hypot(*(temple_r - temple_l))) / 2
    mid = (left + right) / 2
    cap_height = 1.9 * eye_distance + float(uy @ (centre - mid))
    angles = np.linspace(np.pi, 2 * np.pi, 24)
    cap = centre + np.outer(np.cos(angles) * half_width, ux) + np.outer(np.sin(angles) * cap_height, uy)
    outline = [points[JAW], cap]
    if neck:
        chin = points[8]
        neck_w = 0.55 * half_width
        drop = 1.6 * eye_distance
        outline.append(
            np.array(
                [
                    chin - neck_w * ux + drop * uy,
                    chin + neck_w * ux + drop * uy,
                    chin - neck_w * ux,
                    chin + neck_w * ux,
                ]
            )
        )
    return np.concatenate(outline, axis=0)


def head_mask(landmarks: np.ndarray, shape: tuple[int, int], neck: bool = True) -> np.ndarray:
    """A hard 0/1 float32 mask (H, W) of `head_polygon`; callers feather it."""
    hull = cv2.convexHull(np.round(head_polygon(landmarks, neck) * 16).astype(np.int32))
    mask = np.zeros(shape, dtype=np.uint8)
    cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) * (1 / 255)


def shared_background(
    photos: Mapping[str, np.ndarray], layout: SceneLayout, width: int, height: int
) -> np.ndarray:
    """One neutral backdrop for both: the photos' backgrounds (faces masked out), blurred away and muted.

    Each photo is placed where the layout puts it, its head region excluded by normalised
    convolution, blended left (a) to right (b), blurred heavily, pulled towards grey and given a
    gentle vertical gradient and vignette. Computed at 1/8 size: it is all low frequency anyway.
    """
    small_w, small_h = max(8, width // 8), max(8, height // 8)
    down = np.diag([small_w / width, small_h / height, 1.0])[:2]
    sigma = 0.12 * max(small_w, small_h)
    layers, weights = [], []
    for subject in ("a", "b"):
        placement = layout.placements[subject]
        photo = np.asarray(photos[subject])
        # Shrink the photo first (INTER_AREA) so the tiny warp does not alias.
        shrink = min(1.0, 4 * affine_scale(placement.transform) * small_w / width)
        base = (
            cv2.resize(photo, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
            if shrink < 1
            else photo
        )
        to_small = compose_affine(
            down, compose_affine(placement.transform, np.diag([1 / shrink, 1 / shrink, 1.0])[:2])
        )
        warped = cv2.warpAffine(
            base, to_small, (small_w, small_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        ).astype(np.float32)
        face = head_mask(apply_affine(down, placement.landmarks), (small_h, small_w))
        valid = 1.0 - cv2.GaussianBlur(face, (0, 0), 1.0)
        layers.append(warped)
        weights.append(valid)
    ramp = np.clip(np.linspace(-0.5, 1.5, small_w, dtype=np.float32), 0, 1)[None, :]
    side = [1.0 - ramp, ramp]
    num_sum = sum(layer * (w * s)[..., None] for layer, w, s in zip(layers, weights, side, strict=True))
    den_sum = sum(w * s for w, s in zip(weights, side, strict=True))
    num = cv2.GaussianBlur(np.asarray(num_sum), (0, 0), sigma)
    den = cv2.GaussianBlur(np.asarray(den_sum, dtype=np.float32), (0, 0), sigma)
    colour = num / np.maximum(den, 1e-3)[..., None]
    grey = colour.mean(axis=2, keepdims=True)
    colour = 0.55 * colour + 0.25 * grey + 0.2 * 128.0  # muted: one lighting, no busy backdrop
    big = cv2.resize(colour, (width, height), interpolation=cv2.INTER_CUBIC)
    yy = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    light = (1.08 - 0.12 * (yy + 1) / 2) * (1.0 - 0.18 * (xx**2 + yy**2) / 2)
    return np.clip(big * light[..., None], 0, 255).astype(np.uint8)
