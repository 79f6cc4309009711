"""The preview compositor: animates the two people along the plan in one scene, on the CPU.

Per subject the person (hair, ears, neck, shoulders: kiss_core.scene.segmentation) is cut out once,
as two RGBA layers at about output resolution:

- the **head layer**: the head, its hair and the neck down to a line below the chin, with a
  triangulation of its landmarks plus anchors — points above the brows for the forehead and hair,
  the cap's outline, a ring around the head, a row across the lower neck and the layer's corners.
  Each frame warps it piecewise-affinely (kiss_core.scene.warp) from its own points onto the plan's
  points of that frame: the landmarks carry the whole motion (layout, tilt, shift, turn, closing
  eyelids, pursed lips), the head anchors follow the head and its turn (SubjectTrack.follow), and
  the neck row and lower corners follow the body, so the neck bends between head and shoulders.
- the **body layer**: the rest of the person, moved by one affine per frame (`body_motion`): the
  head's motion damped — the body approaches and leans with the head, but turns a third as much.
  Its alpha is the person's with the head layer's share taken out, so where the two overlap
  (below the neck row, where both move with the body) they add up to the person exactly.

Both bodies are drawn first, then both heads, each pair back subject first in the plan's occlusion
order: a face is never covered by a shoulder. Where the two heads overlap they are ordered per
pixel in 3-D (kiss_core.scene.depth): each mesh point carries its depth on the turned head cylinder
(the plan's per-landmark depth, the anchors' on the cylinder's surface or its silhouette plane),
interpolated over the warped triangles, and whichever surface is nearer covers the other, with an
anti-aliased step a pixel or two wide where the depths cross. So the front face's far cheek, turning away,
goes behind the partner's lips and cheek just inside its silhouette, and the back face is hidden
behind the front one — no fade, no seam across either face. A body cut off by the photo's bottom
edge above the frame's is extended downwards (its last rows repeated), then faded.

The scene behind them is one photo's own background with its people inpainted away, or the
neutral blur (kiss_core.scene.background); each person is pulled a little towards the scene's light
(kiss_core.scene.lighting.scene_light_map). The photos were harmonised with each other before
(kiss_core.scene.lighting.harmonize_photos). Segmentation, inpainting and the layers are made
once per job (`PreviewCompositor.scene`); everything is deterministic and sub-pixel exact, so
nothing flickers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from kiss_core.media.geometry import apply_affine, compose_affine, eye_centers, face_width
from kiss_core.scene.background import choose_background, scene_background
from kiss_core.scene.choreography import KissPlan, SubjectTrack, smoothstep
from kiss_core.scene.depth import coverage
from kiss_core.scene.layout import MIRROR_PERMUTATION, affine_scale, head_polygon
from kiss_core.scene.lighting import apply_lab_map, scene_light_map
from kiss_core.scene.segmentation import PersonSegmentation, segment_person
from kiss_core.scene.warp import PiecewiseAffineWarp, WarpResult, border_points
from kiss_core.schemas import SubjectAnalysis

# The body follows the head damped: this share of its rotation, and of its shift (the approach).
BODY_ROTATION = 0.35
BODY_SHIFT = 0.85
# Where the head layer hands over to the body, in eye distances below the chin: the neck row of
# anchors (following the body), and the fade of the head layer's alpha (inside the body-moved part).
NECK_ROW = 1.0
HEAD_FADE = (1.1, 1.6)
HEAD_BOTTOM = 1.7  # the head layer ends here
BODY_HOLE = (-0.1, 0.3)  # the body layer leaves out the head above this fade (eye distances from the chin)
COLUMN = (1.05, 1.3)  # the head layer's sides fade across these head half-widths (the ring is at 1.2)
NECK_COLUMN = (0.55, 0.8)  # ...and below the chin, across these
BODY_OPAQUE, BODY_FADE = 0.75, 1.5  # a body extended below the photo: opaque, then faded (face widths)
# Share of the head cylinder's depth the two forehead rows of anchors take (the higher one curving
# back); the hair cap, the ring around the head and the layer's corners lie in the silhouette plane.
FOREHEAD_RELIEF = (0.9, 0.6)


@dataclass(frozen=True)
class HeadLayer:
    """A subject's head and neck at about output size: RGBA pixels, the map back to the photo, its mesh."""

    rgba: np.ndarray  # (h, w, 4) uint8, alpha = person x head column
    to_photo: np.ndarray  # (2, 3) affine, layer pixel -> photo pixel
    anchors: np.ndarray  # (M, 2) photo pixels moving with the head: forehead, hair, ring, upper corners
    body_anchors: np.ndarray  # (K, 2) photo pixels moving with the body: neck row, lower corners
    pivot: np.ndarray  # (2,) photo pixel the body turns about (below the chin)
    warp: (
        PiecewiseAffineWarp  # over the layer's points: 68 landmarks (frame iBUG order), anchors, body anchors
    )
    relief: np.ndarray  # (M,) share of the head cylinder's depth each anchor takes (FOREHEAD_RELIEF)

    def targets(self, track: SubjectTrack) -> np.ndarray:
        """(T, 68 + M + K, 2) frame positions of the mesh points over the clip."""
        body = body_motion(track, apply_affine(track.layout_transform, self.pivot))
        on_body = apply_affine(
            compose_affine(body, np.broadcast_to(track.layout_transform, body.shape)), self.body_anchors
        )
        return np.concatenate([track.landmarks, track.follow(self.anchors), on_body], axis=1)

    def depths(self, track: SubjectTrack) -> np.ndarray | None:
        """(T, 68 + M + K) depth of the mesh points towards the camera (frame pixels); None without one.

        Landmarks: the plan's. Head anchors: on the turned cylinder as far as their relief says (the
        forehead), else in the axis plane with the hair and the silhouette. Body anchors (the lower
        neck, the corners): in the axis plane.
        """
        if track.depth is None:
            return None
        count = len(track.depth)
        axis = (np.zeros(count) if track.axis_depth is None else track.axis_depth)[:, None]
        anchors = axis + self.relief[None, :] * (track.surface_depth(self.anchors) - axis)
        body = np.broadcast_to(axis, (count, len(self.body_anchors)))
        return np.concatenate([track.depth, anchors, body], axis=1)


@dataclass(frozen=True)
class BodyLayer:
    """A subject's body (shoulders, hair beside them) without the head layer's share, moved rigidly."""

    rgba: np.ndarray  # (h, w, 4) uint8
    to_photo: np.ndarray  # (2, 3) layer pixel -> photo pixel
    pivot: np.ndarray  # (2,) photo pixel the body turns about

    def transforms(self, track: SubjectTrack) -> np.ndarray:
        """(T, 2, 3) layer pixel -> frame pixel per frame."""
        body = body_motion(track, apply_affine(track.layout_transform, self.pivot))
        inner = compose_affine(track.layout_transform, self.to_photo)
        return compose_affine(body, np.broadcast_to(inner, body.shape))


@dataclass(frozen=True)
class PersonLayers:
    head: HeadLayer
    body: BodyLayer


@dataclass(frozen=True)
class Scene:
    """What a job renders from, made once: the backdrop, both people's layers, and which scene it is."""

    background: np.ndarray  # (H, W, 3) uint8
    choice: str  # "a", "b" or "blur"
    layers: dict[str, PersonLayers]
    segmentations: dict[str, PersonSegmentation]


def body_motion(track: SubjectTrack, pivot: np.ndarray) -> np.ndarray:
    """(T, 2, 3) layout frame -> frame pixels for the body: the head's motion damped about `pivot` (layout).

    The body scales as the head leans in, turns BODY_ROTATION of the head's tilt, and its pivot moves
    BODY_SHIFT of the way the head's motion moves it: shoulders approach and lean, the neck bends.
    """
    motion = np.asarray(track.motion, dtype=np.float64)
    linear = motion[:, :, :2]
    scale = np.sqrt(np.abs(np.linalg.det(linear)))
    angle = np.arctan2(linear[:, 1, 0], linear[:, 0, 0]) * BODY_ROTATION
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    damped = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    pivot = np.asarray(pivot, dtype=np.float64).reshape(2)
    moved = (linear @ pivot) + motion[:, :, 2]  # where the head's motion takes the pivot
    target = pivot + BODY_SHIFT * (moved - pivot)
    shift = target - damped @ pivot
    return np.concatenate([damped, shift[..., None]], axis=-1)


def _face_frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The face's own axes: unit x (across the eyes), unit y (towards the chin), eye distance."""
    left, right = eye_centers(points)
    eye_distance = float(np.hypot(*(right - left))) or 1.0
    ux = (right - left) / eye_distance
    uy = np.array([-ux[1], ux[0]])
    if float(uy @ (points[8] - (left + right) / 2)) < 0:
        uy = -uy
    return ux, uy, eye_distance


def head_anchors(landmarks: np.ndarray) -> np.ndarray:
    """Photo points that hold the head's shape beyond the landmarks: forehead rows, hair cap, a ring."""
    points = np.asarray(landmarks, dtype=np.float64)
    ux, uy, eye_distance = _face_frame(points)
    brows = points[17:27]
    forehead = np.concatenate([brows - k * eye_distance * uy for k in (0.45, 0.95)])
    outline = head_polygon(points, neck=False)  # jaw (17), cap (24)
    cap = outline[17:41][2:-2:2]
    centre, half = _head_box(points)
    ring_angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    ring = (
        centre
        + np.outer(np.cos(ring_angles) * half[0] * 1.2, ux)
        + np.outer(np.sin(ring_angles) * half[1] * 1.12, uy)
    )
    return np.concatenate([forehead, cap, ring])


def _head_box(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and half extents (across, down) of the head outline without the neck, in the face's axes."""
    ux, uy, _ = _face_frame(points)
    outline = head_polygon(points, neck=False)
    across, down = outline @ ux, outline @ uy
    centre = ux * (across.max() + across.min()) / 2 + uy * (down.max() + down.min()) / 2
    return centre, np.array([np.ptp(across), np.ptp(down)]) / 2


def anchor_relief(anchor_count: int) -> np.ndarray:
    """(anchor_count,) relief of `head_anchors`' points (two forehead rows of ten first) and any after."""
    relief = np.zeros(anchor_count)
    relief[:10], relief[10:20] = FOREHEAD_RELIEF
    return relief


def neck_row(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Photo points across the lower neck that move with the body, and the body's pivot (their middle)."""
    points = np.asarray(landmarks, dtype=np.float64)
    ux, uy, eye_distance = _face_frame(points)
    centre, half = _head_box(points)
    chin = points[8]
    base = chin + NECK_ROW * eye_distance * uy
    base = base + ux * float((centre - base) @ ux)  # under the head's middle
    row = base + np.outer(np.linspace(-1.0, 1.0, 5) * half[0] * 1.2, ux)
    return row, base


def head_column(
    points: np.ndarray, shape: tuple[int, int], fade: tuple[float, float] = HEAD_FADE
) -> np.ndarray:
    """float32 (h, w): 1 over the head, its hair and the upper neck; 0 below the neck and beside the head.

    `points` are the landmarks in this grid's pixels. The bottom fades across HEAD_FADE (below the
    neck row, where the head layer moves with the body); the sides over a few percent.
    """
    ux, uy, eye_distance = _face_frame(points)
    centre, half = _head_box(points)
    h, w = shape
    xs = np.arange(w, dtype=np.float32)[None, :]
    ys = np.arange(h, dtype=np.float32)[:, None]
    across = np.abs(ux[0] * xs + ux[1] * ys - np.float32(centre @ ux)) / np.float32(half[0])
    below = (uy[0] * xs + uy[1] * ys - np.float32(points[8] @ uy)) / np.float32(eye_distance)
    # Beside the head the column is the head's width; from the chin down it narrows to the neck, so
    # shoulders and hair beside the neck go with the body, which the head layer does not cover.
    narrow = smoothstep((below - 0.1) / 0.5)
    lo = COLUMN[0] + (NECK_COLUMN[0] - COLUMN[0]) * narrow
    hi = COLUMN[1] + (NECK_COLUMN[1] - COLUMN[1]) * narrow
    side = 1.0 - smoothstep((across - lo) / (hi - lo))
    bottom = 1.0 - smoothstep((below - fade[0]) / (fade[1] - fade[0]))
    return (side * bottom).astype(np.float32)


def _crop(
    photo: np.ndarray, box: tuple[int, int, int, int], factor: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """photo[box] shrunk by `factor` (area averaging); the maps layer pixel <-> photo pixel."""
    x0, y0, x1, y1 = box
    crop = photo[y0:y1, x0:x1]
    if factor < 1:
        size = (max(2, round((x1 - x0) * factor)), max(2, round((y1 - y0) * factor)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    fx, fy = crop.shape[1] / (x1 - x0), crop.shape[0] / (y1 - y0)
    # Pixel-centre convention of cv2.resize: src = (dst + 0.5) / f - 0.5.
    to_photo = np.array([[1 / fx, 0, x0 + 0.5 / fx - 0.5], [0, 1 / fy, y0 + 0.5 / fy - 0.5]])
    to_layer = np.array([[fx, 0, -to_photo[0, 2] * fx], [0, fy, -to_photo[1, 2] * fy]])
    return np.ascontiguousarray(crop), to_photo, to_layer


def _inside(h: int, w: int, soft: float) -> np.ndarray:
    """float32 (h, w): 0 on a layer's border rising to 1 over `soft` pixels, so no crop edge can show."""
    ys = np.minimum(np.arange(h), np.arange(h)[::-1]).astype(np.float32)[:, None]
    xs = np.minimum(np.arange(w), np.arange(w)[::-1]).astype(np.float32)[None, :]
    return (smoothstep(ys / soft) * smoothstep(xs / soft)).astype(np.float32)


def _feather(alpha: np.ndarray, sigma: float) -> np.ndarray:
    """Pull the edge in by about one sigma, then blur: the fade ends near the edge, not outside it."""
    if sigma <= 0.3:
        return alpha
    radius = round(sigma)
    if radius >= 1:
        alpha = cv2.erode(alpha, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2))
    return cv2.GaussianBlur(alpha, (0, 0), sigma)


class PreviewCompositor:
    """Renders a KissPlan from the two photos. Stateless between calls; safe to share."""

    def __init__(self, feather_px: float = 1.5):
        if feather_px < 0:
            raise ValueError(f"`feather_px` must be >= 0 but is {feather_px}")
        self.feather_px = (
            feather_px  # extra softness of the person's edge, in output pixels (a Gaussian sigma)
        )

    def person_layers(
        self,
        plan: KissPlan,
        photos: Mapping[str, np.ndarray],
        analyses: Mapping[str, SubjectAnalysis],
        segmentations: Mapping[str, PersonSegmentation] | None = None,
    ) -> dict[str, PersonLayers]:
        """Cut out both people once: head and body layers, shrunk to ~output size, with their alpha and mesh.

        Shrinking a big photo here (area averaging) keeps the per-frame warp from aliasing and makes
        the mask refinement cheap whatever the photo's resolution.
        """
        layers = {}
        for subject in ("a", "b"):
            photo = _check_photo(photos[subject], subject)
            landmarks = np.asarray(analyses[subject].landmarks, dtype=np.float64)
            segmentation = (
                segmentations[subject] if segmentations is not None else segment_person(photo, landmarks)
            )
            layers[subject] = self._person(
                plan, plan.tracks[subject], photo, landmarks, segmentation, subject
            )
        return layers

    def _person(
        self,
        plan: KissPlan,
        track: SubjectTrack,
        photo: np.ndarray,
        landmarks: np.ndarray,
        segmentation: PersonSegmentation,
        subject: str,
    ) -> PersonLayers:
        height, width = photo.shape[:2]
        transforms = track.transforms
        most = max(affine_scale(transforms[0]), affine_scale(transforms[plan.contact_frame]))
        factor = min(1.0, 1.25 * most)  # layer pixels per photo pixel
        pad = (3 * self.feather_px + 4) / max(most, 1e-6)  # feather room, in photo pixels
        sigma = self.feather_px / max(most / factor, 1e-6)  # output pixels -> layer pixels
        _, uy, eye_distance = _face_frame(landmarks)
        anchors = head_anchors(landmarks)
        row, pivot = neck_row(landmarks)
        bottom = row + (HEAD_BOTTOM - NECK_ROW) * eye_distance * uy  # across the neck, however it leans
        hair = anchors - 0.4 * eye_distance * uy  # room above the ring for hair that stands up
        centre, _ = _head_box(landmarks)
        wide = centre + (anchors[-16:] - centre) * 1.15  # the ring grown past the column's sides
        outline = np.concatenate([anchors, hair, wide, row, bottom, landmarks])
        x0, y0 = np.floor(outline.min(axis=0) - pad).astype(int)
        x1, y1 = np.ceil(outline.max(axis=0) + pad).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if x1 - x0 < 2 or y1 - y0 < 2:
            raise ValueError(f"subject {subject}: the head lies outside the photo")

        # Head layer: person x head column, meshed over landmarks, head anchors, neck row and corners.
        crop, to_photo, to_layer = _crop(photo, (x0, y0, x1, y1), factor)
        h, w = crop.shape[:2]
        layer_points = apply_affine(to_layer, landmarks)
        person = _feather(segmentation.mask(to_photo, (w, h), guide=crop), sigma)
        alpha = person * head_column(layer_points, (h, w)) * _inside(h, w, 3.0)
        corners = border_points(w, h)
        upper = corners[[0, 1, 4, 6, 7]]  # top corners, top middle, side middles: with the head
        lower = corners[[2, 3, 5]]  # bottom corners and middle: with the body
        ring = np.clip(apply_affine(to_layer, anchors), 0, [w - 1, h - 1])
        neck = np.clip(apply_affine(to_layer, row), 0, [w - 1, h - 1])
        # Mesh points in the frame's iBUG order (a mirrored subject's indices are permuted).
        ordered = layer_points[MIRROR_PERMUTATION] if track.mirrored else layer_points
        mesh = PiecewiseAffineWarp(np.concatenate([ordered, ring, upper, neck, lower]))
        head = HeadLayer(
            rgba=np.dstack([crop, np.round(alpha * 255).astype(np.uint8)]),
            to_photo=to_photo,
            anchors=apply_affine(to_photo, np.concatenate([ring, upper])),
            body_anchors=apply_affine(to_photo, np.concatenate([neck, lower])),
            pivot=pivot,
            warp=mesh,
            relief=anchor_relief(len(anchors) + len(upper)),
        )

        # Body layer: everything of the person the head layer does not draw, down to the photo's bottom.
        grid_to_photo = cv2.invertAffineTransform(segmentation.to_grid)
        rows, cols = np.nonzero(segmentation.person > 0.02)
        extent = apply_affine(grid_to_photo, np.stack([cols, rows], axis=1).astype(np.float64))
        bx0, by0 = np.floor(np.minimum(extent.min(axis=0), (x0, y0)) - pad).astype(int)
        bx1 = int(np.ceil(max(extent[:, 0].max(), x1) + pad)) + 1
        bx0, by0, bx1 = max(bx0, 0), max(by0, 0), min(bx1, width)
        body_crop, body_to_photo, body_to_layer = _crop(photo, (bx0, by0, bx1, height), factor)
        bh, bw = body_crop.shape[:2]
        person = _feather(segmentation.mask(body_to_photo, (bw, bh), guide=body_crop), sigma)
        # The body keeps the neck: where the head moves off it (tilt, the approach), the neck shows,
        # not a hole. Only the head above the chin is taken out.
        head_only = head_column(apply_affine(body_to_layer, landmarks), (bh, bw), fade=BODY_HOLE)
        body_alpha = person * (1.0 - head_only)
        body_alpha = np.clip(body_alpha, 0.0, 1.0)
        body_rgb, body_alpha = _extend_down(
            body_crop, body_alpha, track, body_to_photo, plan.height, face_width(landmarks) * factor
        )
        # A body the photo cuts off at its sides fades there over a quarter face width, not a cut.
        edge = np.minimum(np.arange(body_alpha.shape[1]), np.arange(body_alpha.shape[1])[::-1])
        soft = max(2.0, 0.25 * face_width(landmarks) * factor)
        body_alpha = body_alpha * smoothstep(edge / soft).astype(np.float32)[None, :]
        body_alpha[0] = 0
        # Only the part with any alpha is warped each frame: cut the layer down to it.
        alpha8 = np.round(body_alpha * 255).astype(np.uint8)
        rows, cols = np.nonzero(alpha8.any(axis=1))[0], np.nonzero(alpha8.any(axis=0))[0]
        if len(rows) == 0:
            rows, cols = np.array([0]), np.array([0])
        r0, r1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, alpha8.shape[0])
        c0, c1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, alpha8.shape[1])
        body = BodyLayer(
            rgba=np.ascontiguousarray(np.dstack([body_rgb, alpha8])[r0:r1, c0:c1]),
            to_photo=compose_affine(body_to_photo, np.array([[1.0, 0, c0], [0, 1.0, r0]])),
            pivot=pivot,
        )
        return PersonLayers(head=head, body=body)

    def scene(
        self,
        plan: KissPlan,
        photos: Mapping[str, np.ndarray],
        analyses: Mapping[str, SubjectAnalysis],
        background: str = "auto",
    ) -> Scene:
        """Everything made once per job: segmentation, the backdrop (inpainted), the layers in its light."""
        photos = {s: _check_photo(photos[s], s) for s in ("a", "b")}
        segmentations = {
            s: segment_person(photos[s], np.asarray(analyses[s].landmarks, dtype=np.float64))
            for s in ("a", "b")
        }
        choice = choose_background(background, segmentations)
        backdrop = scene_background(choice, photos, segmentations, plan.layout)
        layers = self.person_layers(plan, photos, analyses, segmentations)
        if choice != "blur":
            layers = {s: _in_scene_light(layers[s], backdrop, plan.tracks[s]) for s in ("a", "b")}
        return Scene(background=backdrop, choice=choice, layers=layers, segmentations=segmentations)

    def render(
        self,
        plan: KissPlan,
        photos: Mapping[str, np.ndarray],
        analyses: Mapping[str, SubjectAnalysis],
        background: str | None = None,
    ) -> Iterator[np.ndarray]:
        """Frames (H, W, 3) uint8 in order, one per plan frame. Each yielded array is a fresh buffer.

        `background`: "auto" (the photo with more usable background), "a", "b" or "blur"; None: the
        plan's (the request's choice), so every backend's first frame shows the same scene.
        """
        yield from self.frames(plan, self.scene(plan, photos, analyses, background or plan.background))

    def frames(self, plan: KissPlan, scene: Scene) -> Iterator[np.ndarray]:
        """The frames of `plan` from a prepared `scene`."""
        layers = scene.layers
        targets = {s: layers[s].head.targets(plan.tracks[s]) for s in ("a", "b")}
        depths = {s: layers[s].head.depths(plan.tracks[s]) for s in ("a", "b")}
        bodies = {s: layers[s].body.transforms(plan.tracks[s]) for s in ("a", "b")}
        order = (("b", "a"), ("a", "b"))  # index: plan.front value (0 = a on top, so b is drawn first)
        size = (plan.width, plan.height)
        for t in range(plan.frame_count):
            frame = scene.background.copy()
            drawn = order[int(plan.front[t])]
            for subject in drawn:
                _draw_affine(frame, layers[subject].body.rgba, bodies[subject][t])
            heads = []
            for subject in drawn:  # back, then front
                depth = depths[subject]
                at_t = None if depth is None else depth[t]
                heads.append(_warp_head(layers[subject].head, targets[subject][t], at_t, size))
            if heads[0] is not None and heads[1] is not None:
                order_by_depth(heads[1], heads[0])
            for head in heads:
                if head is not None:
                    _blend(frame, head.result.image, head.alpha, head.result.origin)
            yield frame


@dataclass
class WarpedHead:
    """One head warped onto a frame: its window, its alpha (0..1, as it will be blended), its mesh."""

    result: WarpResult
    alpha: np.ndarray  # (h, w) float32
    warp: PiecewiseAffineWarp
    targets: np.ndarray  # (P, 2) the mesh points in the frame
    depths: np.ndarray | None  # (P,) their depth towards the camera, frame pixels

    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) in the frame around the pixels it draws (alpha > 0); empty when none."""
        x, y, w, h = cv2.boundingRect(cv2.extractChannel(self.result.image, 3))
        ox, oy = self.result.origin
        return ox + x, oy + y, ox + x + w, oy + y + h

    def depth(self, window: tuple[int, int, int, int]) -> np.ndarray:
        """float32 depth of its surface at each pixel of `window` (frame coordinates, inside its own)."""
        assert self.depths is not None
        return self.warp.interpolate(self.depths, self.targets, self.result, window)

    def alpha_in(self, window: tuple[int, int, int, int]) -> np.ndarray:
        """A view of its alpha over `window` (frame coordinates, inside its own)."""
        ox, oy = self.result.origin
        x0, y0, x1, y1 = window
        return self.alpha[y0 - oy : y1 - oy, x0 - ox : x1 - ox]


def _warp_head(
    layer: HeadLayer, targets: np.ndarray, depths: np.ndarray | None, size: tuple[int, int]
) -> WarpedHead | None:
    warped = layer.warp.warp(layer.rgba, targets, output_size=size, depths=depths)
    if warped.image.size == 0:
        return None
    alpha = cv2.extractChannel(warped.image, 3).astype(np.float32) * np.float32(1 / 255)
    return WarpedHead(warped, alpha, layer.warp, targets, depths)


def order_by_depth(front: WarpedHead, back: WarpedHead) -> None:
    """Rewrite both alphas where the heads overlap so that blending `back`, then `front` shows each pixel
    as seen in 3-D: the nearer surface over the farther, over the scene.

    With `w` the share of a pixel where the front surface is nearer (kiss_core.scene.depth.coverage)
    and a_f, a_b the alphas, the frame is w (F over B over scene) + (1 - w) (B over F over scene). Two
    blends in a row give that exactly with front alpha a_f (1 - (1 - w) a_b) and back alpha
    a_b (1 - w a_f) / (1 - front alpha). Outside the overlap both are left as they are.
    """
    if front.depths is None or back.depths is None:
        return
    fx0, fy0, fx1, fy1 = front.box()
    bx0, by0, bx1, by1 = back.box()
    window = (max(fx0, bx0), max(fy0, by0), min(fx1, bx1), min(fy1, by1))
    if window[2] <= window[0] or window[3] <= window[1]:
        return
    nearer = coverage(front.depth(window) - back.depth(window))
    a_f, a_b = front.alpha_in(window), back.alpha_in(window)
    hidden = 1.0 - nearer
    hidden *= a_b  # share of the front's pixel the nearer back surface covers
    shown_f = a_f * (1.0 - hidden)
    shown_b = nearer
    shown_b *= a_f
    np.subtract(1.0, shown_b, out=shown_b)
    shown_b *= a_b  # the back's share of the final pixel
    rest = np.maximum(1.0 - shown_f, np.float32(1e-6))
    np.divide(shown_b, rest, out=shown_b)
    np.clip(shown_b, 0.0, 1.0, out=shown_b)
    a_f[...] = shown_f
    a_b[...] = shown_b


def _blend(frame: np.ndarray, rgba: np.ndarray, alpha: np.ndarray, origin: tuple[int, int]) -> None:
    """frame[window] = frame * (1 - alpha) + rgb * alpha, in place."""
    x0, y0 = origin
    h, w = alpha.shape
    roi = frame[y0 : y0 + h, x0 : x0 + w]
    # cv2.blendLinear: roi*(1-a) + fg*a in one C++ pass, saturating to uint8.
    rgb = cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)  # a SIMD copy; numpy's strided one costs 5x
    roi[...] = cv2.blendLinear(rgb, roi, alpha, 1.0 - alpha)


def _draw_affine(frame: np.ndarray, rgba: np.ndarray, affine: np.ndarray) -> None:
    """Blend an RGBA layer onto `frame` through one affine (layer pixel -> frame pixel), in place."""
    h, w = rgba.shape[:2]
    corners = apply_affine(affine, np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64))
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, frame.shape[1]), min(y1, frame.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    shifted = np.array(affine, dtype=np.float64, copy=True)
    shifted[:, 2] -= (x0, y0)
    warped = cv2.warpAffine(
        rgba,
        shifted,
        (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    alpha = cv2.extractChannel(warped, 3).astype(np.float32) * np.float32(1 / 255)
    _blend(frame, warped, alpha, (int(x0), int(y0)))


def _extend_down(
    rgb: np.ndarray,
    alpha: np.ndarray,
    track: SubjectTrack,
    to_photo: np.ndarray,
    frame_height: int,
    face_px: float,
) -> tuple[np.ndarray, np.ndarray]:
    """A body that the photo cuts off above the frame's bottom, continued: last rows repeated, then faded.

    `face_px` is the face width in layer pixels; the extension is opaque for BODY_OPAQUE face widths
    and fades out by BODY_FADE, so a person cut off at the chin gets a neck that fades, not a stump.
    """
    h = rgb.shape[0]
    to_frame = compose_affine(track.transforms[0], to_photo)  # layer -> frame at the start
    down = float(np.hypot(to_frame[0, 1], to_frame[1, 1]))  # frame pixels per layer row
    bottom_y = float(apply_affine(to_frame, np.array([[rgb.shape[1] / 2, h - 1.0]]))[0, 1])
    missing = (frame_height * 1.08 - bottom_y) / max(down, 1e-6)  # layer rows up to below the frame
    rows = int(np.ceil(min(missing, BODY_FADE * face_px)))
    if rows <= 0 or float(alpha[-1].max()) < 0.05:
        return rgb, alpha
    rgb = cv2.copyMakeBorder(rgb, 0, rows, 0, 0, cv2.BORDER_REPLICATE)
    alpha = cv2.copyMakeBorder(alpha, 0, rows, 0, 0, cv2.BORDER_REPLICATE)
    depth = np.arange(1, rows + 1, dtype=np.float32) / max(face_px, 1e-6)
    fade = 1.0 - smoothstep((depth - BODY_OPAQUE) / (BODY_FADE - BODY_OPAQUE))
    alpha[h:] *= fade[:, None].astype(np.float32)
    return rgb, alpha


def _in_scene_light(layers: PersonLayers, backdrop: np.ndarray, track: SubjectTrack) -> PersonLayers:
    """Both layers with the person pulled a little towards the backdrop's colour around where they stand."""
    head = layers.head
    to_frame = compose_affine(track.transforms[0], head.to_photo)
    h, w = head.rgba.shape[:2]
    box = apply_affine(to_frame, np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64))
    x0, y0 = np.clip(np.floor(box.min(axis=0)).astype(int), 0, [backdrop.shape[1], backdrop.shape[0]])
    x1 = int(np.clip(np.ceil(box[:, 0].max()), 0, backdrop.shape[1]))
    span = x1 - x0
    around = backdrop[y0:, max(0, x0 - span) : x1 + span]  # beside and below the head: where they stand
    lab_map = scene_light_map(head.rgba[..., :3], head.rgba[..., 3] / 255.0, around)
    if lab_map is None:
        return layers
    lit_head = np.dstack([apply_lab_map(head.rgba[..., :3], lab_map), head.rgba[..., 3]])
    body = layers.body
    lit_body = np.dstack([apply_lab_map(body.rgba[..., :3], lab_map), body.rgba[..., 3]])
    return PersonLayers(
        head=HeadLayer(
            rgba=lit_head,
            to_photo=head.to_photo,
            anchors=head.anchors,
            body_anchors=head.body_anchors,
            pivot=head.pivot,
            warp=head.warp,
            relief=head.relief,
        ),
        body=BodyLayer(rgba=lit_body, to_photo=body.to_photo, pivot=body.pivot),
    )


def _check_photo(photo: np.ndarray, subject: str) -> np.ndarray:
    photo = np.asarray(photo)
    if photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3:
        raise ValueError(
            f"subject {subject}: photo must be RGB uint8 (H, W, 3) but is {photo.dtype} {photo.shape}"
        )
    return np.ascontiguousarray(photo)
