"""The preview compositor: frames of the right shape, faces where the plan puts them, soft layer edges,
and where the two heads overlap, the nearer surface in front (ordered per pixel in 3-D).

Photos here are drawings (an ellipse "face" on the mean-face landmarks) or, in one test, the
synthetic subjects — composites of several faces, nobody real.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kiss_core.media.geometry import apply_affine, compose_affine
from kiss_core.scene.choreography import face_centers, plan_kiss
from kiss_core.scene.render import BODY_ROTATION, BODY_SHIFT, PreviewCompositor, _warp_head, order_by_depth
from kiss_core.schemas import SubjectAnalysis, VideoParams
from tests.support.mean_face import mean_face_analysis


def drawn_face(
    analysis: SubjectAnalysis, skin: tuple[int, int, int], backdrop: tuple[int, int, int]
) -> np.ndarray:
    """A cartoon face on the analysis' landmarks: skin ellipse, dark eyes and brows, red mouth."""
    photo = np.full((analysis.image_height, analysis.image_width, 3), backdrop, np.uint8)
    points = np.asarray(analysis.landmarks, dtype=np.float32)
    (cx, cy), (w, h), angle = cv2.fitEllipse(np.r_[points[:17], points[17:27] - [0, 40]].astype(np.float32))
    cv2.ellipse(photo, ((cx, cy), (w * 1.05, h * 1.1), angle), skin, -1, cv2.LINE_AA)
    for part in (slice(36, 42), slice(42, 48)):
        cv2.fillConvexPoly(photo, points[part].round().astype(np.int32), (30, 30, 40), cv2.LINE_AA)
    cv2.polylines(
        photo,
        [points[17:22].round().astype(np.int32), points[22:27].round().astype(np.int32)],
        False,
        (60, 40, 30),
        3,
        cv2.LINE_AA,
    )
    cv2.fillPoly(photo, [points[48:60].round().astype(np.int32)], (180, 40, 50), cv2.LINE_AA)
    return photo


@pytest.fixture(scope="module")
def scene() -> tuple[dict[str, SubjectAnalysis], dict[str, np.ndarray]]:
    analyses = {
        "a": mean_face_analysis("a", (640, 800), (200, 260, 460, 540), yaw=12.0),
        "b": mean_face_analysis("b", (480, 480), (150, 100, 290, 250), yaw=-15.0, roll_deg=6.0),
    }
    photos = {
        "a": drawn_face(analyses["a"], (230, 190, 160), (40, 120, 200)),
        "b": drawn_face(analyses["b"], (200, 150, 120), (200, 200, 60)),
    }
    return analyses, photos


def test_frames_shape_count_and_motion(scene) -> None:
    analyses, photos = scene
    plan = plan_kiss(analyses, VideoParams(seconds=2, fps=12, size="416x240", style="romantic"))
    frames = list(PreviewCompositor().render(plan, photos, analyses))
    assert len(frames) == plan.frame_count == 24
    for frame in frames:
        assert frame.shape == (240, 416, 3) and frame.dtype == np.uint8
        assert frame.std() > 5  # not a constant image
    assert np.abs(frames[0].astype(int) - frames[plan.contact_frame].astype(int)).mean() > 3
    assert frames[0] is not frames[1]


def test_faces_are_where_the_plan_says(scene) -> None:
    analyses, photos = scene
    plan = plan_kiss(analyses, VideoParams(seconds=2, fps=12, size="416x240", style="peck"))
    compositor = PreviewCompositor()
    frames = list(compositor.render(plan, photos, analyses))
    from kiss_core.scene.layout import shared_background

    background = shared_background(photos, plan.layout, plan.width, plan.height).astype(int)
    centers = face_centers(plan)
    for t in (0, plan.frame_count // 3, plan.frame_count - 1):
        for subject in ("a", "b"):
            if t == plan.contact_frame:
                continue
            x, y = centers[subject][t].round().astype(int)
            patch = frames[t][y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(0)
            assert np.abs(patch - background[y, x]).max() > 25, (t, subject)
    # The mouth (red) of the front subject is at its planned position at the contact frame.
    c = plan.contact_frame
    front = "ab"[int(plan.front[c])]
    mx, my = plan.tracks[front].landmarks[c, 48:68].mean(0).round().astype(int)
    r, g, b = frames[c][my - 1 : my + 2, mx - 1 : mx + 2].reshape(-1, 3).mean(0)
    assert r > g + 60 and r > b + 60


def test_no_hard_edge_at_the_layer_border() -> None:
    """A flat-coloured photo makes every edge in the frame the layer's own: it must fade, not cut."""
    analyses = {
        "a": mean_face_analysis("a", (500, 500), (150, 150, 350, 360), yaw=10.0),
        "b": mean_face_analysis("b", (500, 500), (150, 150, 350, 360), yaw=-10.0),
    }
    photos = {
        "a": np.full((500, 500, 3), (250, 30, 30), np.uint8),
        "b": np.full((500, 500, 3), (20, 30, 250), np.uint8),
    }
    plan = plan_kiss(analyses, VideoParams(seconds=1, fps=8, size="832x480"))
    # The blur backdrop: a flat photo as the scene would pull the heads' colour towards it.
    frames = list(PreviewCompositor(feather_px=8).render(plan, photos, analyses, background="blur"))
    turned = plan.tracks["a"].turn > 1
    for t, frame in enumerate(frames):
        grad = np.hypot(*np.gradient(frame.astype(np.float32), axis=(0, 1))).max(axis=-1)  # worst channel
        # Where the two heads overlap, the nearer covers the other with an edge a pixel or two wide
        # (test_the_nearer_surface_is_drawn_where_the_heads_overlap): that edge is not the layer's.
        heads = rendered_heads(plan, photos, analyses, t)
        both = (heads["a"]["alpha"] > 0.02) & (heads["b"]["alpha"] > 0.02)
        outside = cv2.dilate(both.astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
        # A hard cut steps by ~200 levels (feather_px=0 measures ~110 here); the feather spreads it out.
        # Folds of the lips against the jaw at mid-turn make it locally steeper (measured 50), still
        # less than half a hard cut.
        assert grad[outside].max() < (60 if turned[t] else 20), t
    # ...yet the heads are there, in their own colours, unchanged (no colour pull in the renderer).
    for subject, colour in (("a", (250, 30, 30)), ("b", (20, 30, 250))):
        x, y = face_centers(plan)[subject][0].round().astype(int)
        np.testing.assert_allclose(frames[0][y, x], colour, atol=2)


def test_head_layers_are_cut_once_and_soft(scene) -> None:
    analyses, photos = scene
    plan = plan_kiss(analyses, VideoParams(seconds=1, fps=8, size="416x240"))
    layers = PreviewCompositor(feather_px=6).person_layers(plan, photos, analyses)
    for subject, person in layers.items():
        layer = person.head
        alpha = layer.rgba[..., 3]
        assert layer.rgba.dtype == np.uint8 and layer.rgba.shape[2] == 4
        assert alpha.max() == 255
        # Transparent all along the crop's border: no rectangle of the photo can show.
        assert max(alpha[0].max(), alpha[-1].max(), alpha[:, 0].max(), alpha[:, -1].max()) <= 2, subject
        assert ((alpha > 10) & (alpha < 245)).sum() > 0.05 * (alpha > 10).sum()  # a real feather


def test_big_photos_are_shrunk_once() -> None:
    """A 12-megapixel photo is cut and area-averaged to about output size before any frame is drawn."""
    analyses = {
        "a": mean_face_analysis("a", (3000, 4000), (900, 1200, 2100, 2500), yaw=10.0),
        "b": mean_face_analysis("b", (480, 480), (150, 100, 290, 250), yaw=-10.0),
    }
    photos = {
        "a": drawn_face(analyses["a"], (230, 190, 160), (40, 120, 200)),
        "b": drawn_face(analyses["b"], (200, 150, 120), (200, 200, 60)),
    }
    plan = plan_kiss(analyses, VideoParams(seconds=1, fps=8, size="832x480"))
    layers = PreviewCompositor().person_layers(plan, photos, analyses)
    assert max(layers["a"].head.rgba.shape[:2]) < 600  # from a 3000x4000 photo
    assert max(layers["a"].body.rgba.shape[:2]) < 1000
    frames = list(PreviewCompositor().render(plan, photos, analyses))
    x, y = plan.tracks["a"].landmarks[0, 48:68].mean(0).round().astype(int)
    r, g, b = frames[0][y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).mean(0)
    assert r > g + 60 and r > b + 60  # the mouth is where the plan puts it


def test_bad_arguments_are_named(scene) -> None:
    analyses, photos = scene
    with pytest.raises(ValueError, match="feather_px"):
        PreviewCompositor(feather_px=-1)
    with pytest.raises(TypeError):
        PreviewCompositor(harmonize=0.5)  # colour is kiss_core.scene.lighting's job, before rendering
    plan = plan_kiss(analyses, VideoParams(seconds=1, fps=8, size="416x240"))
    with pytest.raises(ValueError, match="subject a"):
        next(PreviewCompositor().render(plan, {**photos, "a": photos["a"][..., 0]}, analyses))


@pytest.fixture(scope="module")
def synthetic_pair() -> tuple[dict[str, SubjectAnalysis], dict[str, np.ndarray]]:
    """Synthetic subjects 0 and 1 (faces of nobody), analysed by the real dlib analyzer."""
    synthetic = pytest.importorskip("kiss_core.faces.synthetic")
    faces = pytest.importorskip("kiss_core.faces.analysis")
    from kiss_core.settings import FaceSettings

    photos = {"a": synthetic.synthetic_subject(0), "b": synthetic.synthetic_subject(1)}
    analyzer = faces.DlibFaceAnalyzer(FaceSettings())
    return {s: analyzer.analyze(p, s) for s, p in photos.items()}, photos


def test_synthetic_subjects_render(synthetic_pair) -> None:
    """End to end on the synthetic subjects (faces of nobody), analysed by the real dlib analyzer."""
    analyses, photos = synthetic_pair
    plan = plan_kiss(analyses, VideoParams(seconds=1, fps=12, size="416x240", style="french"))
    frames = np.stack(list(PreviewCompositor().render(plan, photos, analyses)))
    assert frames.shape == (12, 240, 416, 3)
    x, y = face_centers(plan)["b"][0].round().astype(int)
    skin = frames[0][y - 3 : y + 4, x - 3 : x + 4].reshape(-1, 3).mean(0)
    assert skin[0] > skin[2]  # skin is warmer than the neutral backdrop


def rendered_heads(plan, photos, analyses, frame: int) -> dict[str, dict[str, np.ndarray]]:
    """Per head at `frame`, full frame size: `alpha` (0..1) as warped, `depth` (frame pixels, where the
    head is drawn) and `shown`, its share of each finished pixel once the two are ordered by depth."""
    layers = PreviewCompositor().person_layers(plan, photos, analyses)
    size = (plan.width, plan.height)
    heads = {}
    for s, person in layers.items():
        track = plan.tracks[s]
        depths = person.head.depths(track)
        assert depths is not None
        heads[s] = _warp_head(person.head, person.head.targets(track)[frame], depths[frame], size)
    out: dict[str, dict[str, np.ndarray]] = {s: {} for s in heads}
    for s, head in heads.items():
        (x0, y0), (h, w) = head.result.origin, head.alpha.shape
        for name, values in (("alpha", head.alpha), ("depth", head.depth((x0, y0, x0 + w, y0 + h)))):
            full = np.zeros((plan.height, plan.width), np.float32)
            full[y0 : y0 + h, x0 : x0 + w] = values
            out[s][name] = full
    front = "ab"[int(plan.front[frame])]
    back = "b" if front == "a" else "a"
    order_by_depth(heads[front], heads[back])
    for s, head in heads.items():
        (x0, y0), (h, w) = head.result.origin, head.alpha.shape
        full = np.zeros((plan.height, plan.width), np.float32)
        full[y0 : y0 + h, x0 : x0 + w] = head.alpha
        out[s]["blended"] = full
    out[back]["shown"] = out[back]["blended"] * (1 - out[front]["blended"])
    out[front]["shown"] = out[front]["blended"]
    return out


@pytest.mark.parametrize("style", ["peck", "romantic", "french"])
def test_heads_overlap_little_at_contact(synthetic_pair, style: str) -> None:
    """Turned three-quarter, the heads overlap in a strip by the lips, and each near eye stays clear.

    The masks include hair and neck, which sit behind the partner's head in any real kiss seen
    from the side, so some overlap is right; frontal layers overlapped ~90 %. Measured at 832x480 on
    the head layers' alpha as warped (before ordering by depth): peck 0.39, romantic 0.34, french
    0.33 of the smaller head.
    """
    analyses, photos = synthetic_pair
    plan = plan_kiss(analyses, VideoParams(style=style))
    c = plan.contact_frame
    heads = rendered_heads(plan, photos, analyses, c)
    masks = {s: heads[s]["alpha"] for s in heads}
    overlap = np.minimum(masks["a"], masks["b"]).sum() / min(masks["a"].sum(), masks["b"].sum())
    assert overlap < (0.42 if style == "peck" else 0.36)
    front = "ab"[int(plan.front[c])]
    back = "b" if front == "a" else "a"
    near_eye = slice(36, 42) if back == "a" else slice(42, 48)  # the back face's eye away from the partner
    x, y = plan.tracks[back].landmarks[c, near_eye].mean(0).round().astype(int)
    assert heads[front]["shown"][y, x] < 0.1  # the front head's hair there lies behind the back face
    # The lips meet: both heads are opaque at the contact point.
    mx, my = plan.mouth_centers()[front][c].round().astype(int)
    assert masks["a"][my, mx] > 0.5 and masks["b"][my, mx] > 0.5


@pytest.mark.parametrize("style", ["peck", "romantic", "french", "cheek"])
def test_the_nearer_surface_is_drawn_where_the_heads_overlap(synthetic_pair, style: str) -> None:
    """Synthetic subjects tinted red (a) and blue (b): where both heads are opaque, the rendered contact
    frame shows the colour of the one whose surface is nearer the camera, and the two meet in an edge a
    pixel or two wide — not a band where one face fades into the other."""
    analyses, photos = synthetic_pair
    luma = {s: photos[s].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) for s in photos}
    tinted = {
        "a": np.dstack([luma["a"], 0.25 * luma["a"], 0.25 * luma["a"]]).astype(np.uint8),
        "b": np.dstack([0.25 * luma["b"], 0.25 * luma["b"], luma["b"]]).astype(np.uint8),
    }
    plan = plan_kiss(analyses, VideoParams(style=style, seconds=2, fps=12))
    c = plan.contact_frame
    frames = PreviewCompositor().render(plan, tinted, analyses, background="blur")
    frame = next(f for i, f in enumerate(frames) if i == c).astype(np.float32)
    heads = rendered_heads(plan, tinted, analyses, c)
    both = (heads["a"]["alpha"] > 0.99) & (heads["b"]["alpha"] > 0.99)
    nearer_a = heads["a"]["depth"] - heads["b"]["depth"]
    # Away from the contour (more than two pixels), each pixel is wholly the nearer face's.
    settled = cv2.erode(both.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    slope = np.hypot(*np.gradient(nearer_a))
    away = settled & (np.abs(nearer_a) > 2.5 * np.maximum(slope, 1e-3))
    redder = frame[..., 0] - frame[..., 2]
    a_in_front, b_in_front = away & (nearer_a > 0), away & (nearer_a < 0)
    assert a_in_front.sum() > 200 and b_in_front.sum() > 200  # each face covers part of the other
    assert (redder[a_in_front] > 20).mean() > 0.99
    assert (redder[b_in_front] < -20).mean() > 0.99
    # The front face's far cheek turns away: past the contour, inside its own outline, the back face shows.
    front = "ab"[int(plan.front[c])]
    from kiss_core.generation.quality.seam import hull_mask

    inside_front = hull_mask(plan.tracks[front].landmarks[c], both.shape).astype(bool)
    behind = b_in_front if front == "a" else a_in_front
    assert (behind & inside_front).sum() > 100
    # Mixed pixels (both faces showing 10-90 %) lie only along the contour: a narrow edge, not a fade.
    mixed = (heads["a"]["shown"] > 0.1) & (heads["b"]["shown"] > 0.1) & both
    contour_rows = np.unique(np.nonzero(mixed)[0])
    assert mixed.sum() <= 3 * max(len(contour_rows), 1)


def test_the_body_follows_the_head_damped(scene) -> None:
    """Shoulders approach and lean with the head, but turn only a third as much as the head tilts."""
    analyses, photos = scene
    plan = plan_kiss(analyses, VideoParams(seconds=2, fps=12, size="416x240", style="french"))
    layers = PreviewCompositor().person_layers(plan, photos, analyses)
    c = plan.contact_frame
    for subject in "ab":
        track = plan.tracks[subject]
        body = layers[subject].body.transforms(track)
        head_angle = np.degrees(np.arctan2(track.transforms[:, 1, 0], track.transforms[:, 0, 0]))
        body_angle = np.degrees(np.arctan2(body[:, 1, 0], body[:, 0, 0]))
        tilt = head_angle[c] - head_angle[0]
        assert abs(tilt) > 3
        np.testing.assert_allclose(body_angle[c] - body_angle[0], BODY_ROTATION * tilt, atol=0.05)
        # The neck's pivot moves most of the way the head moves it (the approach).
        pivot = layers[subject].body.pivot
        on_head = apply_affine(track.transforms[[0, c]], pivot[None])[:, 0]
        body_of_photo = compose_affine(body[[0, c]], _inverse(layers[subject].body.to_photo))
        on_body = apply_affine(body_of_photo, pivot[None])
        head_move, body_move = on_head[1] - on_head[0], on_body[1, 0] - on_body[0, 0]
        assert np.linalg.norm(head_move) > 10
        np.testing.assert_allclose(body_move, BODY_SHIFT * head_move, atol=0.5)


def test_rendering_is_deterministic(scene) -> None:
    analyses, photos = scene
    plan = plan_kiss(analyses, VideoParams(seconds=1, fps=8, size="416x240", style="peck"))
    first = np.stack(list(PreviewCompositor().render(plan, photos, analyses)))
    again = np.stack(list(PreviewCompositor().render(plan, photos, analyses)))
    np.testing.assert_array_equal(first, again)


def _inverse(affine: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(affine, dtype=np.float64))
