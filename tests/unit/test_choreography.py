"""The motion plan: length, contact at the lips, smoothness, determinism, style timing, mirroring.

Built on analyses of the mean face (no person), so these run in milliseconds.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kiss_core.media.geometry import MOUTH, eye_centers
from kiss_core.scene.choreography import PHASES, KissPlan, face_centers
from kiss_core.scene.choreography import plan_kiss as plan_with_camera
from kiss_core.schemas import SubjectAnalysis, VideoParams
from tests.support.mean_face import mean_face_analysis


def plan_kiss(analyses: dict[str, SubjectAnalysis], params: VideoParams) -> KissPlan:
    """The choreography alone, with a still camera: these tests measure the people's own motion
    (the camera's push-in, and the same checks through it, are in test_camera.py)."""
    return plan_with_camera(analyses, params, camera_push_in=0.0)


def analyses(yaw_a: float = 12.0, yaw_b: float = -15.0, roll_b: float = 0.0) -> dict[str, SubjectAnalysis]:
    """Two differently framed mean faces: other photo sizes, face sizes and a tilted head."""
    return {
        "a": mean_face_analysis("a", (640, 800), (200, 260, 460, 540), yaw=yaw_a),
        "b": mean_face_analysis("b", (480, 480), (150, 100, 290, 250), yaw=yaw_b, roll_deg=roll_b),
    }


UPPER_LIDS = [37, 38, 43, 44]
NOT_LIDS = np.setdiff1d(np.arange(68), UPPER_LIDS)


def face_width(plan: KissPlan, subject: str, frame: int) -> float:
    points = plan.tracks[subject].landmarks[frame]
    return float(np.linalg.norm(points[16] - points[0]))


@pytest.mark.parametrize(("seconds", "fps"), [(1.0, 8), (2.5, 24), (5.0, 24), (3.3, 12), (10.0, 30)])
def test_frame_count_and_shapes(seconds: float, fps: int) -> None:
    params = VideoParams(seconds=seconds, fps=fps, size="640x384")
    plan = plan_kiss(analyses(), params)
    count = round(seconds * fps)
    assert plan.frame_count == params.frame_count == count
    assert (plan.width, plan.height, plan.fps) == (640, 384, fps)
    for track in plan.tracks.values():
        assert track.transforms.shape == (count, 2, 3)
        assert track.landmarks.shape == (count, 68, 2)
    assert plan.front.shape == (count,)
    assert set(np.unique(plan.front)) <= {0, 1}
    # Phases tile the clip in order and the contact frame opens the hold.
    spans = [plan.phases[name] for name in PHASES]
    assert spans[0][0] == 0 and spans[-1][1] == count
    assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(spans))
    assert plan.contact_frame == plan.phases["hold"][0]
    assert 0 < plan.contact_frame < count


@pytest.mark.parametrize("style", ["peck", "romantic", "french"])
@pytest.mark.parametrize("intensity", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("roll_b", [0.0, 10.0])
def test_mouths_meet_at_contact(style: str, intensity: float, roll_b: float) -> None:
    plan = plan_kiss(analyses(roll_b=roll_b), VideoParams(style=style, intensity=intensity))
    mouths = plan.mouth_centers()
    c = plan.contact_frame
    width = face_width(plan, "a", c)
    assert np.linalg.norm(mouths["a"][c] - mouths["b"][c]) < 0.05 * width
    # ... and they start well apart, and stay together through the hold.
    assert np.linalg.norm(mouths["a"][0] - mouths["b"][0]) > 1.2 * width
    hold = slice(*plan.phases["hold"])
    assert np.linalg.norm(mouths["a"][hold] - mouths["b"][hold], axis=1).max() < 0.05 * width


def test_cheek_contact_is_on_the_near_cheek() -> None:
    plan = plan_kiss(analyses(), VideoParams(style="cheek"))
    c = plan.contact_frame
    b_points = plan.tracks["b"].landmarks[c]
    near_cheek = b_points[[2, 3, 31, 48, 41]].mean(axis=0)  # image-left side of b faces a
    a_mouth = plan.tracks["a"].landmarks[c, MOUTH].mean(axis=0)
    width = face_width(plan, "a", c)
    assert np.linalg.norm(a_mouth - near_cheek) < 0.05 * width
    assert np.linalg.norm(a_mouth - b_points[MOUTH].mean(axis=0)) > 0.15 * width
    assert plan.front[c] == 0  # the one who kisses the cheek is in front


@pytest.mark.parametrize("style", ["peck", "romantic", "french", "cheek"])
def test_motion_is_smooth(style: str) -> None:
    plan = plan_kiss(analyses(), VideoParams(style=style, intensity=1.0))
    width = face_width(plan, "a", 0)
    for track in plan.tracks.values():
        step = np.linalg.norm(np.diff(track.landmarks, axis=0), axis=2)  # (T-1, 68)
        assert step.max() < 0.08 * width
        # No jump: the step length itself changes gradually (bounded acceleration) — except the
        # upper eyelids, which a blink shuts in a tenth of a second (test_each_person_blinks_...).
        accel = np.linalg.norm(np.diff(track.landmarks, n=2, axis=0), axis=2)
        assert accel[:, NOT_LIDS].max() < 0.012 * width
        assert accel[:, UPPER_LIDS].max() < 0.04 * width
        assert step.sum(axis=0).max() > 0.5 * width  # it does move
    # Eased: standing still on the first and last frame of the approach.
    mouth = plan.tracks["a"].landmarks[:, MOUTH].mean(axis=1)
    first = np.linalg.norm(mouth[1] - mouth[0])
    assert first < 0.002 * width


def test_plan_is_deterministic_and_seed_free() -> None:
    one = plan_kiss(analyses(), VideoParams(style="french", intensity=0.7, seed=1))
    two = plan_kiss(analyses(), VideoParams(style="french", intensity=0.7, seed=99))
    assert one.phases == two.phases and one.contact_frame == two.contact_frame
    np.testing.assert_array_equal(one.front, two.front)
    for s in ("a", "b"):
        np.testing.assert_array_equal(one.tracks[s].transforms, two.tracks[s].transforms)
        np.testing.assert_array_equal(one.tracks[s].landmarks, two.tracks[s].landmarks)


def hold_length(style: str, intensity: float) -> int:
    start, end = plan_kiss(analyses(), VideoParams(style=style, intensity=intensity)).phases["hold"]
    return end - start


@pytest.mark.parametrize("intensity", [0.0, 0.5, 1.0])
def test_styles_differ_in_timing(intensity: float) -> None:
    assert (
        hold_length("peck", intensity)
        < hold_length("romantic", intensity)
        <= hold_length("french", intensity)
    )
    contacts = {
        s: plan_kiss(analyses(), VideoParams(style=s, intensity=intensity)).contact_frame
        for s in ("peck", "romantic", "french", "cheek")
    }
    assert len(set(contacts.values())) > 1


def test_intensity_lengthens_the_hold_and_the_tilt() -> None:
    assert hold_length("romantic", 0.0) < hold_length("romantic", 1.0)

    def tilt_at_contact(intensity: float) -> float:
        plan = plan_kiss(analyses(yaw_a=0.0, yaw_b=0.0), VideoParams(style="romantic", intensity=intensity))
        left, right = eye_centers(plan.tracks["a"].landmarks[plan.contact_frame])
        return float(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0])))

    assert 0 < tilt_at_contact(0.0) < tilt_at_contact(1.0)


def test_heads_tilt_to_opposite_sides() -> None:
    """The same on-screen rotation for two faces facing each other: each tilts to its own side."""
    plan = plan_kiss(analyses(), VideoParams(style="romantic"))
    c = plan.contact_frame
    angles = {}
    for s in ("a", "b"):
        l0, r0 = eye_centers(plan.tracks[s].landmarks[0])
        l1, r1 = eye_centers(plan.tracks[s].landmarks[c])
        angles[s] = np.degrees(np.arctan2(*(r1 - l1)[::-1]) - np.arctan2(*(r0 - l0)[::-1]))
    assert angles["a"] > 4 and angles["b"] > 4


@pytest.mark.parametrize(
    ("yaw_a", "yaw_b", "mirror_a", "mirror_b"),
    [
        (12.0, -15.0, False, False),
        (-20.0, -15.0, True, False),
        (12.0, 25.0, False, True),
        (-20.0, 25.0, True, True),
    ],
)
def test_faces_looking_the_wrong_way_are_mirrored(
    yaw_a: float, yaw_b: float, mirror_a: bool, mirror_b: bool
) -> None:
    plan = plan_kiss(analyses(yaw_a=yaw_a, yaw_b=yaw_b), VideoParams())
    assert plan.tracks["a"].mirrored is mirror_a
    assert plan.tracks["b"].mirrored is mirror_b
    for s, towards in (("a", +1), ("b", -1)):
        points = plan.tracks[s].landmarks[0]
        # The inner face sits towards the partner: a's nose right of its jaw centre, b's left of it.
        assert towards * (points[30, 0] - (points[0, 0] + points[16, 0]) / 2) > 0
        # Mirrored landmarks keep iBUG order: index 36-41 is still the eye on the image's left.
        left, right = eye_centers(points)
        assert left[0] < right[0]
        assert np.linalg.det(plan.tracks[s].transforms[0, :, :2]) * (-1 if plan.tracks[s].mirrored else 1) > 0


def test_face_centers() -> None:
    plan = plan_kiss(analyses(), VideoParams(seconds=2, fps=12))
    centers = face_centers(plan)
    assert set(centers) == {"a", "b"}
    assert centers["a"].shape == (24, 2)
    np.testing.assert_allclose(centers["b"], plan.tracks["b"].landmarks.mean(axis=1))
    assert centers["a"][0, 0] < plan.width / 2 < centers["b"][0, 0]


# --- face gestures: turn, eyelids, pucker -------------------------------------------------------------


def eye_opening(points: np.ndarray) -> float:
    """Mean distance between the upper-lid points and the lower-lid points they close onto."""
    return float(np.linalg.norm(points[[37, 38, 43, 44]] - points[[41, 40, 47, 46]], axis=1).mean())


def nose_offset(points: np.ndarray) -> float:
    """Nose tip minus the jaw's middle, along the eye line, in jaw spans: > 0 turned to the image right."""
    across = points[16] - points[0]
    return float((points[30] - (points[0] + points[16]) / 2) @ across / (across @ across))


@pytest.mark.parametrize("style", ["peck", "romantic", "french", "cheek"])
@pytest.mark.parametrize("intensity", [0.0, 1.0])
def test_eyes_close_for_the_kiss_and_open_after(style: str, intensity: float) -> None:
    plan = plan_kiss(analyses(), VideoParams(style=style, intensity=intensity))
    c = plan.contact_frame
    kisser = plan.tracks["a"]
    assert kisser.eyelid[c] > 0.8
    for track in plan.tracks.values():
        assert track.eyelid[0] < 0.2 and track.eyelid[-1] < 0.2
        assert track.eyelid.min() >= 0 and track.eyelid.max() <= 1
    # The landmarks carry it: the kisser's lids are shut at contact, open at the ends.
    assert eye_opening(kisser.landmarks[c]) < 0.1 * eye_opening(kisser.landmarks[0])
    assert eye_opening(kisser.landmarks[-1]) > 0.8 * eye_opening(kisser.landmarks[0])


@pytest.mark.parametrize("style", ["peck", "romantic", "french", "cheek"])
def test_lips_purse_at_contact(style: str) -> None:
    plan = plan_kiss(analyses(), VideoParams(style=style))
    c = plan.contact_frame
    a = plan.tracks["a"]
    assert 0 < a.pucker[c] <= 1 and a.pucker[0] == 0
    # Lips closing: the inner lips come together (a French kiss keeps them a little open).
    inner = np.linalg.norm(a.landmarks[:, [61, 62, 63]] - a.landmarks[:, [67, 66, 65]], axis=2).mean(axis=1)
    assert inner[c] < (0.75 if style == "french" else 0.5) * inner[0] + 1e-6


def lip_height(points: np.ndarray) -> float:
    """Height of the outer lips across the face's own vertical axis (perpendicular to the eye line)."""
    left, right = eye_centers(points)
    across = (right - left) / np.linalg.norm(right - left)
    return float(np.ptp(points[48:60] @ np.array([-across[1], across[0]])))


@pytest.mark.parametrize("style", ["peck", "romantic", "french", "cheek"])
def test_lips_press_flat_at_contact(style: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """At contact the meeting lips flatten: lower than the same plan's without the press, and lower than
    just before; the press eases in with the contact and out after it (a cheek does not press)."""
    import kiss_core.scene.choreography as choreography

    plan = plan_kiss(analyses(), VideoParams(style=style))
    monkeypatch.setattr(choreography, "_PRESS", 0.0)
    loose = plan_kiss(analyses(), VideoParams(style=style))
    c = plan.contact_frame
    before = c - round(0.25 * plan.fps)
    for s in ("a",) if style == "cheek" else ("a", "b"):
        track = plan.tracks[s]
        assert track.press is not None and track.press[0] == 0 and track.press[before] == 0
        assert track.press[c] == track.press.max() > 0.15 and track.press[-1] == 0
        assert lip_height(track.landmarks[c]) < 0.85 * lip_height(loose.tracks[s].landmarks[c])
        assert lip_height(track.landmarks[c]) < 0.85 * lip_height(track.landmarks[before])
    if style == "cheek":
        assert plan.tracks["b"].press is not None and not plan.tracks["b"].press.any()


@pytest.mark.parametrize("style", ["peck", "romantic", "french", "cheek"])
def test_heads_turn_towards_each_other(style: str) -> None:
    plan = plan_kiss(analyses(yaw_a=0.0, yaw_b=0.0), VideoParams(style=style))
    c = plan.contact_frame
    a, b = plan.tracks["a"], plan.tracks["b"]
    assert a.turn[0] == 0 and a.turn[c] > 20
    assert nose_offset(a.landmarks[c]) > nose_offset(a.landmarks[0]) + 0.15  # a looks right, to b
    if style == "cheek":
        assert b.turn[c] < 0  # offers the cheek: turns away
        assert nose_offset(b.landmarks[c]) > nose_offset(b.landmarks[0])
    else:
        assert b.turn[c] > 20
        assert nose_offset(b.landmarks[c]) < nose_offset(b.landmarks[0]) - 0.15  # b looks left, to a


def test_faces_overlap_only_around_the_lips() -> None:
    """At contact the faces are three-quarter views: each one's near eye is clear of the other face."""
    import cv2

    plan = plan_kiss(analyses(yaw_a=0.0, yaw_b=0.0), VideoParams(style="romantic"))
    c = plan.contact_frame
    hulls = {s: cv2.convexHull(plan.tracks[s].landmarks[c].astype(np.float32)) for s in ("a", "b")}
    # The eye away from the partner (a: image left, b: image right) lies outside the partner's face.
    near_eye = {
        "a": plan.tracks["a"].landmarks[c, 36:42].mean(0),
        "b": plan.tracks["b"].landmarks[c, 42:48].mean(0),
    }
    for s, other in (("a", "b"), ("b", "a")):
        assert cv2.pointPolygonTest(hulls[other], tuple(map(float, near_eye[s])), False) < 0


def test_french_moves_more_during_the_hold() -> None:
    def hold_motion(style: str) -> float:
        plan = plan_kiss(analyses(), VideoParams(style=style, intensity=1.0))
        hold = slice(*plan.phases["hold"])
        lm = plan.tracks["a"].landmarks[hold]
        return float(np.linalg.norm(np.diff(lm, axis=0), axis=2).sum(axis=0).mean() / len(lm))

    assert hold_motion("french") > 1.5 * hold_motion("romantic")


def test_turn_never_folds_the_face() -> None:
    """The cylinder map keeps the order of points along x for every turn up to the limit."""
    from kiss_core.scene.choreography import turn_points

    xs = np.linspace(-1.5, 1.5, 301)
    points = np.c_[xs, np.zeros_like(xs)]
    turned = turn_points(points, np.zeros(2), 1.0, np.linspace(-60, 60, 13))
    assert (np.diff(turned[..., 0], axis=1) > 0).all()
    outside = np.abs(xs) >= 1
    np.testing.assert_allclose(turned[:, outside, 0], np.broadcast_to(xs[outside], (13, outside.sum())))


def test_follow_moves_photo_points_with_the_head() -> None:
    """Points without depth or gesture (jaw sides, brows) follow exactly as the landmarks do."""
    a = analyses()
    plan = plan_kiss(a, VideoParams(style="romantic"))
    track = plan.tracks["a"]
    assert not track.mirrored
    followed = track.follow(np.asarray(a["a"].landmarks))
    rigid = np.r_[0:6, 11:27]
    np.testing.assert_allclose(followed[:, rigid], track.landmarks[:, rigid], atol=1e-9)


# --- idle motion: breathing and a blink before the approach -------------------------------------------


def before_the_approach(plan: KissPlan) -> int:
    """The idle lead-in: frames 0 .. lead_in, where only breathing and a blink move anyone."""
    mouths = plan.mouth_centers()
    gap = np.linalg.norm(mouths["a"] - mouths["b"], axis=1)
    # The approach itself has not started: the mouths are as far apart as on frame 0 (breathing aside).
    assert np.abs(gap[: plan.lead_in + 1] - gap[0]).max() < 0.01 * gap[0]
    return plan.lead_in


@pytest.mark.parametrize("style", ["peck", "romantic", "french", "cheek"])
@pytest.mark.parametrize(("seconds", "fps"), [(5.0, 24), (3.0, 12), (10.0, 30)])
def test_no_frame_is_frozen_before_the_approach(style: str, seconds: float, fps: int) -> None:
    plan = plan_kiss(analyses(), VideoParams(style=style, seconds=seconds, fps=fps))
    early = before_the_approach(plan)
    assert early >= 3
    width = face_width(plan, "a", 0)
    for track in plan.tracks.values():
        step = np.linalg.norm(np.diff(track.landmarks[: early + 1], axis=0), axis=2)  # (early, 68)
        # No two consecutive frames alike: every frame moves somewhere (least at the turn of a breath,
        # where a sine stands still; ~0.1 px a frame in between) ...
        assert step.max(axis=1).min() > 0.02
        assert np.median(step.max(axis=1)) > 0.05
        # ... and nothing flickers: outside a blink's eyelids, idle motion stays under ~1 px a frame
        # and changes speed gently (a jitter would show as a large second difference).
        assert step[:, NOT_LIDS].max() < 0.008 * width
        accel = np.linalg.norm(np.diff(track.landmarks[: early + 1], n=2, axis=0), axis=2)
        assert accel[:, NOT_LIDS].max() < 0.002 * width


def test_breathing_lifts_each_head_on_its_own_clock() -> None:
    plan = plan_kiss(analyses(), VideoParams(style="romantic", seconds=10, fps=24))
    width = face_width(plan, "a", 0)
    a, b = plan.tracks["a"], plan.tracks["b"]
    assert a.breath is not None and b.breath is not None
    assert a.breath.min() < -0.95 and a.breath.max() > 0.95
    assert np.corrcoef(a.breath, b.breath)[0, 1] < 0.9  # not in step
    # Before the approach moves them, the brow line rises on the in-breath: about a pixel, not more.
    early = before_the_approach(plan)
    brow_y = a.landmarks[:early, 17:27, 1].mean(axis=1)
    breath = a.breath[:early]
    assert np.polyfit(breath, brow_y, 1)[0] < 0  # up (smaller y) when inhaling
    assert 0.004 * width < np.ptp(brow_y) < 0.03 * width


@pytest.mark.parametrize("style", ["peck", "romantic", "french", "cheek"])
def test_each_person_blinks_before_the_kiss(style: str) -> None:
    plan = plan_kiss(analyses(), VideoParams(style=style, seconds=5, fps=24))
    kiss_eyes_from = plan.contact_frame - round(0.55 * plan.fps)
    shut_at = {}
    for s, track in plan.tracks.items():
        before = track.landmarks[:kiss_eyes_from]
        openings = np.array([eye_opening(points) for points in before])
        shut = int(np.argmin(openings))
        # Closed on one frame, open again before the kiss closes the eyes for good.
        assert openings[shut] < 0.1 * openings[0], s
        assert 0 < shut < len(openings) - 2
        assert openings[shut:].max() > 0.95 * openings[0]
        assert track.eyelid[0] == 0
        shut_at[s] = shut
    assert shut_at["a"] != shut_at["b"]  # each on their own time


def test_no_blink_when_the_kiss_starts_at_once() -> None:
    """A 1 s clip has no time for a blink before the eyes close for the kiss: none is squeezed in."""
    plan = plan_kiss(analyses(), VideoParams(style="romantic", seconds=1, fps=8))
    kiss_eyes_from = plan.contact_frame - 0.55 * plan.fps
    for track in plan.tracks.values():
        assert (np.diff(track.eyelid[: max(1, int(kiss_eyes_from))]) >= -1e-12).all()  # only closing
