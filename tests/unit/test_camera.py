"""The camera push-in: a smooth zoom toward the contact, in the plan's landmarks and in the pixels alike.

Plans on analyses of the mean face (no person); pixels from drawn faces (ellipses on those landmarks).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kiss_core.generation.backends.preview import PreviewFrames
from kiss_core.generation.conditioning import Conditioning
from kiss_core.media.geometry import MOUTH, apply_affine
from kiss_core.scene.camera import DEFAULT_PUSH_IN, TUNED_PUSH_IN, apply_camera, is_still, push_in
from kiss_core.scene.choreography import KissPlan, plan_kiss
from kiss_core.scene.pose_video import render_pose_frames
from kiss_core.scene.render import PreviewCompositor
from kiss_core.schemas import SubjectAnalysis, VideoParams
from kiss_core.settings import Settings
from tests.support.mean_face import mean_face_analysis

PUSH = TUNED_PUSH_IN  # the push-in as tuned, also the default


def analyses() -> dict[str, SubjectAnalysis]:
    return {
        "a": mean_face_analysis("a", (640, 800), (200, 260, 460, 540), yaw=12.0),
        "b": mean_face_analysis("b", (480, 480), (150, 100, 290, 250), yaw=-15.0),
    }


Colour = tuple[int, int, int]


def drawn(analysis: SubjectAnalysis, skin: Colour, backdrop: Colour) -> np.ndarray:
    """A cartoon face on the analysis' landmarks over a striped backdrop (so the camera's move shows)."""
    photo = np.full((analysis.image_height, analysis.image_width, 3), backdrop, np.uint8)
    photo[:, ::24] = 255 - np.asarray(backdrop, np.uint8)
    points = np.asarray(analysis.landmarks, dtype=np.float32)
    (cx, cy), (w, h), angle = cv2.fitEllipse(np.r_[points[:17], points[17:27] - [0, 40]].astype(np.float32))
    cv2.ellipse(photo, ((cx, cy), (w * 1.05, h * 1.1), angle), skin, -1, cv2.LINE_AA)
    for part in (slice(36, 42), slice(42, 48), slice(48, 60)):
        cv2.fillConvexPoly(photo, points[part].round().astype(np.int32), (30, 30, 40), cv2.LINE_AA)
    return photo


def zoom_of(camera: np.ndarray) -> np.ndarray:
    return np.sqrt(np.abs(np.linalg.det(camera[..., :2])))


def test_push_in_eases_to_its_zoom_and_keeps_the_view_inside_the_scene() -> None:
    width, height, count = 832, 480, 120
    target = np.array([600.0, 150.0])  # off-centre: the view must stop at the scene's edge
    camera = push_in(count, width, height, 10, 90, target, 0.1)
    zoom = zoom_of(camera)
    assert is_still(camera[0]) and np.allclose(camera[:11], camera[0])
    assert zoom[90:] == pytest.approx(1.1) and np.allclose(camera[90:], camera[90])
    # Smooth: monotone, no jump, at rest at both ends of the move.
    assert (np.diff(zoom) >= 0).all() and np.diff(zoom).max() < 0.003
    assert max(np.diff(zoom)[10], np.diff(zoom)[88]) < 0.1 * np.diff(zoom).max()
    # The frame's corners always look inside the scene: no border to invent.
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], np.float64)
    for t in range(count):
        seen = apply_affine(cv2.invertAffineTransform(camera[t]), corners)
        assert (seen >= -1e-6).all() and (seen <= [width + 1e-6, height + 1e-6]).all()
    # The target comes toward the middle of the frame.
    shown = apply_affine(camera, target[None, :])[:, 0]
    middle = np.array([width / 2, height / 2])
    assert np.linalg.norm(shown[-1] - middle) < np.linalg.norm(target - middle) - 20
    with pytest.raises(ValueError, match="amount"):
        push_in(count, width, height, 0, 10, target, 0.5)


def test_the_setting_and_the_plan_default_agree() -> None:
    assert Settings().generator.camera_push_in == DEFAULT_PUSH_IN
    default = plan_kiss(analyses(), VideoParams(seconds=1, fps=8, size="256x144"))
    assert (default.camera is None) == (DEFAULT_PUSH_IN == 0)


def test_plan_landmarks_carry_the_camera() -> None:
    plan = plan_kiss(analyses(), VideoParams(style="romantic", seconds=4, fps=12, size="640x384"), PUSH)
    still = plan_kiss(analyses(), VideoParams(style="romantic", seconds=4, fps=12, size="640x384"), 0.0)
    assert plan.camera is not None and still.camera is None and still.scene() is still
    scene = plan.scene()
    assert scene.camera is None
    end = plan.phases["hold"][1]
    assert zoom_of(plan.camera[end - 1]) == pytest.approx(1 + PUSH, abs=2e-3)
    for s in ("a", "b"):
        # The scene view is the still plan; the frame view is the camera applied to it.
        np.testing.assert_allclose(scene.tracks[s].landmarks, still.tracks[s].landmarks)
        np.testing.assert_allclose(
            plan.tracks[s].landmarks, apply_affine(plan.camera, scene.tracks[s].landmarks), atol=1e-9
        )
        followed = plan.tracks[s].follow(np.asarray(analyses()[s].landmarks))
        np.testing.assert_allclose(followed[:, :6], plan.tracks[s].landmarks[:, :6], atol=1e-6)
    # Faces grow by the zoom; the lips still meet exactly.
    moved, kept = (np.ptp(p.tracks["a"].landmarks[plan.contact_frame, :17, 0]) for p in (plan, still))
    assert moved > kept * (1 + 0.5 * PUSH)
    mouths = plan.mouth_centers()
    gap = np.linalg.norm(mouths["a"][plan.contact_frame] - mouths["b"][plan.contact_frame])
    assert gap < 0.05 * moved


def test_pose_video_follows_the_camera() -> None:
    plan = plan_kiss(analyses(), VideoParams(style="peck", seconds=2, fps=12, size="416x240"), PUSH)
    last = plan.frame_count - 1
    frames = list(render_pose_frames(plan))
    drawn_at = np.argwhere(frames[last].max(axis=2) > 0)
    points = np.concatenate([t.landmarks[last] for t in plan.tracks.values()])
    scene_points = np.concatenate([t.landmarks[last] for t in plan.scene().tracks.values()])
    assert np.abs(drawn_at[:, ::-1].min(axis=0) - points.min(axis=0)).max() < 4
    assert np.abs(drawn_at[:, ::-1].max(axis=0) - points.max(axis=0)).max() < 4
    assert np.ptp(points[:, 0]) > np.ptp(scene_points[:, 0]) * 1.03  # the camera is in it


def _frames(plan: KissPlan, photos, the_analyses) -> list[np.ndarray]:
    source = PreviewFrames()
    conditioning = Conditioning(backend="preview")
    return list(source.frames(plan, photos, the_analyses, conditioning, VideoParams(), lambda share: None))


def test_preview_pixels_are_where_the_plan_says() -> None:
    """The backend draws the scene and applies the camera: what shows at a planned landmark in the frame
    is what the scene render shows at the same landmark before the camera."""
    the_analyses = analyses()
    photos = {
        "a": drawn(the_analyses["a"], (230, 190, 160), (40, 120, 200)),
        "b": drawn(the_analyses["b"], (200, 150, 120), (200, 200, 60)),
    }
    plan = plan_kiss(the_analyses, VideoParams(style="romantic", seconds=2, fps=12, size="416x240"), PUSH)
    assert plan.camera is not None
    frames = _frames(plan, photos, the_analyses)
    scene_frames = list(PreviewCompositor().render(plan.scene(), photos, the_analyses))
    assert len(frames) == plan.frame_count
    np.testing.assert_array_equal(frames[0], scene_frames[0])  # frame 0: the whole scene
    t = plan.frame_count - 1
    assert np.abs(frames[t].astype(int) - scene_frames[t].astype(int)).mean() > 2  # the camera moved
    for s in ("a", "b"):
        shown = plan.tracks[s].landmarks[t, MOUTH].mean(axis=0)
        before = plan.scene().tracks[s].landmarks[t, MOUTH].mean(axis=0)

        def sample(frame: np.ndarray, at: np.ndarray) -> np.ndarray:
            return cv2.getRectSubPix(frame, (5, 5), (float(at[0]), float(at[1]))).reshape(-1, 3).mean(axis=0)

        np.testing.assert_allclose(sample(frames[t], shown), sample(scene_frames[t], before), atol=12)
    # A still camera leaves the compositor's frames untouched (no warp at all).
    still = plan_kiss(the_analyses, VideoParams(style="romantic", seconds=1, fps=8, size="416x240"), 0.0)
    for a, b in zip(
        _frames(still, photos, the_analyses),
        PreviewCompositor().render(still, photos, the_analyses),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_apply_camera_is_a_crop_and_resize() -> None:
    noise = np.random.default_rng(0).integers(0, 255, (240, 416, 3), dtype=np.uint8)
    frame = cv2.GaussianBlur(noise, (0, 0), 3)  # smooth, so half-pixel conventions do not matter
    assert apply_camera(frame, np.array([[1.0, 0, 0], [0, 1.0, 0]])) is frame
    camera = np.array([[2.0, 0, -208.0], [0, 2.0, -120.0]])  # 2x on the middle
    out = apply_camera(frame, camera)
    expected = cv2.resize(frame[60:180, 104:312], (416, 240), interpolation=cv2.INTER_LINEAR)
    assert np.abs(out[4:-4, 4:-4].astype(int) - expected[4:-4, 4:-4].astype(int)).mean() < 1.5
    assert np.abs(out.astype(int) - frame.astype(int)).mean() > 3  # really another view
    # Warped as four channels for speed: the very pixels a three-channel warpAffine gives.
    three = cv2.warpAffine(frame, camera, (416, 240), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    np.testing.assert_array_equal(out, three)


def test_the_setting_reaches_the_job(tmp_path) -> None:
    """The producer plans with generator.camera_push_in: the stored video moves in, frame 0 does not."""
    from kiss_core.media.video import decode_mp4
    from tests.support.studio import SyntheticStudio

    params = VideoParams(style="peck", seconds=1.5, fps=12, size="416x240")
    videos = {}
    for push in (0.0, PUSH):
        studio = SyntheticStudio(Settings(generator={"camera_push_in": push}), str(tmp_path / f"push{push}"))
        result = studio.produce(studio.pair(0, 1), params)
        frames, _ = decode_mp4(studio.store.get(result.keys["video"]))
        videos[push] = frames.astype(np.float32)
    still, pushed = videos[0.0], videos[PUSH]
    first = float(np.abs(still[0] - pushed[0]).mean())
    last = float(np.abs(still[-1] - pushed[-1]).mean())
    # Frame 0: the same picture but for the two jobs' watermarks (+-2.5 levels) and the codec.
    assert first < 4.0, first
    assert last > first + 4.0, (first, last)  # two still jobs differ by ~0.1 more at the end; this ~6
