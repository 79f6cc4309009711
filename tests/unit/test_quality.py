"""Quality metrics on constructed frames with known answers, built from synthetic subjects only.

Faces of nobody (`synthetic_subject`) are pasted and shifted into frames with NumPy; nothing here
renders a kiss of a real person.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kiss_core.faces.analysis import DlibFaceAnalyzer
from kiss_core.faces.dlib_models import shape_predictor
from kiss_core.faces.synthetic import synthetic_subject
from kiss_core.generation.quality import (
    contact_quality,
    detector_box,
    flicker_quality,
    identity_report,
    lighting_delta_e,
    mouth_center,
    predict_landmarks,
    static_mask_from_boxes,
    static_mask_from_plan,
    video_quality_report,
)
from kiss_core.media.geometry import face_width
from kiss_core.settings import FaceSettings

THRESHOLD = FaceSettings().same_person_threshold
FRAME = (640, 360)  # width, height
SCALE = 0.5
SLOTS = {"a": (40, 30), "b": (360, 30)}  # top-left of each portrait in the frame


@pytest.fixture(scope="module")
def analyzer() -> DlibFaceAnalyzer:
    return DlibFaceAnalyzer(FaceSettings())


@pytest.fixture(scope="module")
def portraits() -> dict[int, np.ndarray]:
    return {i: synthetic_subject(i) for i in range(3)}


@pytest.fixture(scope="module")
def references(analyzer: DlibFaceAnalyzer, portraits: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    return {s: np.asarray(analyzer.analyze(portraits[i], s).embedding) for s, i in (("a", 0), ("b", 1))}


def _frame(portraits: dict[int, np.ndarray], who: dict[str, int], shift: int) -> np.ndarray:
    frame = np.full((FRAME[1], FRAME[0], 3), 120, dtype=np.uint8)
    for subject, index in who.items():
        small = cv2.resize(portraits[index], None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_AREA)
        x, y = SLOTS[subject][0] + shift, SLOTS[subject][1]
        frame[y : y + small.shape[0], x : x + small.shape[1]] = small
    return frame


def _centres(
    analyzer: DlibFaceAnalyzer, portraits: dict[int, np.ndarray], shifts: list[int]
) -> dict[str, np.ndarray]:
    """Where the plan puts each face: the portrait's face centre, scaled and moved into its slot."""
    centres = {}
    for subject, index in (("a", 0), ("b", 1)):
        face = analyzer.detect(portraits[index])[0]
        centres[subject] = np.array([face.center * SCALE + SLOTS[subject] + (shift, 0) for shift in shifts])
    return centres


def test_faces_where_expected_are_found_with_high_similarity(
    analyzer: DlibFaceAnalyzer, portraits: dict[int, np.ndarray], references: dict[str, np.ndarray]
) -> None:
    shifts = [0, 12, 24]
    frames = [_frame(portraits, {"a": 0, "b": 1}, s) for s in shifts]
    report = identity_report(frames, _centres(analyzer, portraits, shifts), references, analyzer, THRESHOLD)
    assert report.threshold == THRESHOLD
    assert [q.subject for q in report.subjects] == ["a", "b"]
    for quality in report.subjects:
        assert quality.frames_found == quality.frames_checked == 3
        assert quality.visible_share == 1.0
        assert quality.similarity_min is not None and quality.similarity_min > THRESHOLD
        assert (
            quality.similarity_mean is not None and quality.similarity_mean >= quality.similarity_min - 1e-9
        )


def test_a_swapped_face_shows_as_low_similarity(
    analyzer: DlibFaceAnalyzer, portraits: dict[int, np.ndarray], references: dict[str, np.ndarray]
) -> None:
    shifts = [0, 12]
    frames = [_frame(portraits, {"a": 0, "b": 1}, 0), _frame(portraits, {"a": 2, "b": 1}, 12)]
    report = identity_report(frames, _centres(analyzer, portraits, shifts), references, analyzer, THRESHOLD)
    a, b = report.subjects
    assert a.frames_found == 2
    assert a.similarity_min is not None and a.similarity_min < THRESHOLD  # subject 2 stands in for a
    assert b.similarity_min is not None and b.similarity_min > THRESHOLD


def test_a_face_far_from_where_the_plan_expects_it_is_not_counted(
    analyzer: DlibFaceAnalyzer, portraits: dict[int, np.ndarray], references: dict[str, np.ndarray]
) -> None:
    frames = [_frame(portraits, {"a": 0}, 0)]
    centres = _centres(analyzer, portraits, [0])
    centres["a"] = centres["a"] + (0, 200)  # expected well below the face
    report = identity_report(frames, centres, references, analyzer, THRESHOLD)
    assert [q.frames_found for q in report.subjects] == [0, 0]


def test_no_face_gives_nothing_found(
    analyzer: DlibFaceAnalyzer, portraits: dict[int, np.ndarray], references: dict[str, np.ndarray]
) -> None:
    frames = [np.full((FRAME[1], FRAME[0], 3), 90, dtype=np.uint8)] * 2
    report = identity_report(frames, _centres(analyzer, portraits, [0, 0]), references, analyzer, THRESHOLD)
    for quality in report.subjects:
        assert quality.frames_found == 0 and quality.frames_checked == 2 and quality.visible_share == 0.0
        assert quality.similarity_min is None and quality.similarity_mean is None


def test_centres_must_match_the_frames(analyzer: DlibFaceAnalyzer, references: dict[str, np.ndarray]) -> None:
    frames = [np.zeros((64, 64, 3), dtype=np.uint8)]
    with pytest.raises(ValueError, match="expected_centers"):
        identity_report(
            frames, {"a": np.zeros((2, 2)), "b": np.zeros((1, 2))}, references, analyzer, THRESHOLD
        )


# --- constructed scenes -------------------------------------------------------------------------

BACKGROUND = 120


@pytest.fixture(scope="module")
def landmarks(analyzer: DlibFaceAnalyzer, portraits: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Landmarks of each half-size portrait, in portrait pixels."""
    out = {}
    for index, portrait in portraits.items():
        small = cv2.resize(portrait, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_AREA)
        out[index] = analyzer.detect(small)[0].landmarks.astype(np.float64)
    return out


def _paste(layer: np.ndarray, image: np.ndarray, points: np.ndarray, offset: np.ndarray) -> None:
    """Blend the head of `image` (an ellipse around its landmarks, soft edge) into `layer` at `offset`,
    so that only the head moves when the offset changes (as with a compositor's head mask)."""
    height, width = layer.shape[:2]
    span = face_width(points)
    alpha = np.zeros(image.shape[:2], dtype=np.float32)
    centre = points.mean(axis=0) - (0, 0.15 * span)
    cv2.ellipse(alpha, tuple(int(v) for v in centre), (int(0.7 * span), int(0.95 * span)), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.05 * span)[..., None]
    h, w = image.shape[:2]
    ox, oy = int(offset[0]), int(offset[1])
    x0, y0, x1, y1 = max(0, ox), max(0, oy), min(width, ox + w), min(height, oy + h)
    if x1 > x0 and y1 > y0:
        src = image[y0 - oy : y1 - oy, x0 - ox : x1 - ox].astype(np.float32)
        a = alpha[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        dst = layer[y0:y1, x0:x1].astype(np.float32)
        layer[y0:y1, x0:x1] = np.round(a * src + (1 - a) * dst).astype(np.uint8)


def _two_faces(
    portraits: dict[int, np.ndarray],
    landmarks: dict[int, np.ndarray],
    gap: float,
    who: tuple[int, int] = (0, 1),
    background: int = BACKGROUND,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Subject who[0] on the left, who[1] on the right, mouth centres `gap` mean face widths apart,
    level, around the frame centre; left of the midpoint between the mouths shows the left person,
    right of it the right one (as at a kiss, each hides the other's near half). Returns the frame
    and each person's landmarks in it."""
    ia, ib = who
    width = (face_width(landmarks[ia]) + face_width(landmarks[ib])) / 2
    middle = np.array([FRAME[0] / 2, FRAME[1] / 2])
    half_gap = np.array([gap * width / 2, 0.0])
    offsets = {
        "a": np.round(middle - half_gap - mouth_center(landmarks[ia])).astype(int),
        "b": np.round(middle + half_gap - mouth_center(landmarks[ib])).astype(int),
    }
    layers = {}
    for subject, index in (("a", ia), ("b", ib)):
        layer = np.full((FRAME[1], FRAME[0], 3), background, dtype=np.uint8)
        small = cv2.resize(portraits[index], None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_AREA)
        _paste(layer, small, landmarks[index], offsets[subject])
        layers[subject] = layer
    seam = int(middle[0])
    frame = np.concatenate([layers["a"][:, :seam], layers["b"][:, seam:]], axis=1)
    return frame, {"a": landmarks[ia] + offsets["a"], "b": landmarks[ib] + offsets["b"]}


# --- contact ------------------------------------------------------------------------------------


def test_contact_distance_is_small_when_the_mouths_touch_and_grows_with_a_shift(
    analyzer: DlibFaceAnalyzer, portraits: dict[int, np.ndarray], landmarks: dict[int, np.ndarray]
) -> None:
    touching, planned = _two_faces(portraits, landmarks, 0.0)
    # The merged face is one face to HOG: the second is measured on its planned rectangle alone.
    assert len(analyzer.detect(touching)) == 1
    near = contact_quality(touching, 7, planned, analyzer)
    assert near.frame == 7
    assert near.mouth_distance is not None and near.mouth_distance < 0.1

    for gap in (0.5, 1.0):
        shifted, actual = _two_faces(portraits, landmarks, gap)
        # The plan said "touching"; the frame has one face moved by `gap` face widths.
        apart = contact_quality(shifted, 7, planned, analyzer)
        assert apart.mouth_distance is not None
        assert gap - 0.1 < apart.mouth_distance < gap + 0.1
        # Told exactly where the faces are (boxes), without detection, the answer is the same.
        boxes = {s: _landmark_box(p) for s, p in actual.items()}
        exact = contact_quality(shifted, 7, boxes)
        assert exact.mouth_distance == pytest.approx(apart.mouth_distance, abs=0.05)


def _landmark_box(points: np.ndarray) -> tuple[float, float, float, float]:
    return detector_box(points)


def test_contact_is_not_measurable_without_both_faces(
    analyzer: DlibFaceAnalyzer, portraits: dict[int, np.ndarray], landmarks: dict[int, np.ndarray]
) -> None:
    frame, planned = _two_faces(portraits, landmarks, 1.0)
    assert contact_quality(frame, 0, {"a": planned["a"]}).mouth_distance is None
    # A centre where no face is and no other size to borrow: not measurable either.
    lonely = contact_quality(frame, 0, {"a": np.array([5.0, 5.0])}, analyzer)
    assert lonely.mouth_distance is None
    with pytest.raises(ValueError, match="expected"):
        contact_quality(frame, 0, {"a": np.zeros(3), "b": planned["b"]})


def test_the_face_analyzer_and_the_quality_report_share_one_shape_predictor(
    analyzer: DlibFaceAnalyzer, portraits: dict[int, np.ndarray], landmarks: dict[int, np.ndarray]
) -> None:
    predictor = shape_predictor()
    assert analyzer.predictor is predictor
    assert DlibFaceAnalyzer(FaceSettings()).predictor is predictor  # a second analyzer loads no copy
    frame, planned = _two_faces(portraits, landmarks, 1.0)
    before = predictor.runs
    found = predict_landmarks(frame, detector_box(planned["a"]), refine=1)
    assert predictor.runs == before + 2  # the report's landmarks ran on that same object, twice
    assert np.abs(found - planned["a"]).mean() < 3.0


# --- flicker ------------------------------------------------------------------------------------


def test_identical_frames_do_not_flicker(
    portraits: dict[int, np.ndarray], landmarks: dict[int, np.ndarray]
) -> None:
    frame, _ = _two_faces(portraits, landmarks, 1.0)
    flicker = flicker_quality([frame] * 6, None)
    assert (flicker.mean, flicker.p95, flicker.frames) == (0.0, 0.0, 6)
    assert flicker_quality([frame], None).mean == 0.0


def test_background_brightness_jumps_are_flicker_and_moving_faces_are_not(
    portraits: dict[int, np.ndarray], landmarks: dict[int, np.ndarray]
) -> None:
    rng = np.random.default_rng(3)
    frames, boxes = [], []
    for step in range(8):
        frame, marks = _two_faces(portraits, landmarks, 1.2 - 0.1 * step)  # the faces approach
        frames.append(frame)
        boxes += [_landmark_box(m) for m in marks.values()]
    static = static_mask_from_boxes(boxes, frames[0].shape)
    assert 0.2 < static.mean() < 0.8
    steady = flicker_quality(frames, static)
    assert steady.mean < 0.5 and steady.frames == 8  # the motion is all inside the face boxes
    assert flicker_quality(frames, None).mean > steady.mean  # ... which the whole frame would count

    jumpy = []
    for frame in frames:
        offset = int(rng.integers(-40, 41))
        changed = frame.astype(np.int16)
        changed[static] += offset
        jumpy.append(np.clip(changed, 0, 255).astype(np.uint8))
    flicker = flicker_quality(jumpy, static)
    assert flicker.mean > 5 and flicker.p95 >= flicker.mean


def test_codec_noise_is_not_flicker(
    portraits: dict[int, np.ndarray], landmarks: dict[int, np.ndarray]
) -> None:
    from kiss_core.media.video import decode_mp4, encode_mp4

    frame, _ = _two_faces(portraits, landmarks, 1.0)
    noisy = np.clip(frame.astype(np.int16) + np.random.default_rng(0).integers(-3, 4, frame.shape), 0, 255)
    decoded, _ = decode_mp4(encode_mp4([frame, noisy.astype(np.uint8)] * 4, 24, crf=28))
    assert flicker_quality(list(decoded), None).mean < 1.0


def test_static_mask_from_plan_leaves_out_where_faces_come(landmarks: dict[int, np.ndarray]) -> None:
    track = np.stack([landmarks[0] + (dx, 0) for dx in (0, 40, 80)])  # (3, 68, 2), moving right
    mask = static_mask_from_plan({"a": track}, (FRAME[1], FRAME[0]), margin=0.25)
    for points in track:
        for x, y in points.round().astype(int):
            assert not mask[y, x]
    assert mask[0, 0] and mask[-1, -1]
    wider = static_mask_from_plan({"a": track}, (FRAME[1], FRAME[0], 3), margin=0.75)
    assert wider.sum() < mask.sum() and not (wider & ~mask).any()
    with pytest.raises(ValueError, match="static_mask"):
        flicker_quality([np.zeros((8, 8, 3), np.uint8)] * 2, np.ones((4, 4), bool))


# --- lighting -----------------------------------------------------------------------------------


def test_lighting_delta_e_sees_a_colour_cast(
    portraits: dict[int, np.ndarray], landmarks: dict[int, np.ndarray]
) -> None:
    frame, marks = _two_faces(portraits, landmarks, 1.6, who=(0, 0))
    same = lighting_delta_e(frame, marks["a"], marks["b"])
    assert same is not None and same < 2
    cast = frame.astype(np.float32)
    cast[:, FRAME[0] // 2 :] *= np.array([1.25, 1.0, 0.8], dtype=np.float32)  # warm light on b
    warm = lighting_delta_e(np.clip(cast, 0, 255).astype(np.uint8), marks["a"], marks["b"])
    assert warm is not None and warm > 10
    # No skin in view: not measurable.
    assert lighting_delta_e(frame, marks["a"], marks["a"] + (2000, 0)) is None


# --- the whole report, for any video ------------------------------------------------------------


def _approach(
    portraits: dict[int, np.ndarray], landmarks: dict[int, np.ndarray], gaps: list[float], swap_at: int = -1
) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    frames, plan = [], {"a": [], "b": []}
    for index, gap in enumerate(gaps):
        who = (2, 1) if index == swap_at else (0, 1)
        frame, marks = _two_faces(portraits, landmarks, gap, who=who)
        frames.append(frame)
        for subject in plan:
            plan[subject].append(marks[subject])
    return frames, {s: np.stack(v) for s, v in plan.items()}


GAPS = [1.6, 1.3, 1.0, 0.8, 0.6, 0.5, 0.8, 1.2]


def test_video_report_without_a_plan_tracks_both_people(
    analyzer: DlibFaceAnalyzer,
    portraits: dict[int, np.ndarray],
    landmarks: dict[int, np.ndarray],
    references: dict[str, np.ndarray],
) -> None:
    frames, _ = _approach(portraits, landmarks, GAPS)
    report = video_quality_report(frames, references, analyzer, THRESHOLD, upsample=0)
    a, b = report.subjects
    for quality in (a, b):
        assert quality.frames_found == quality.frames_checked == len(GAPS) and quality.visible_share == 1.0
        assert quality.similarity_min is not None and quality.similarity_min > THRESHOLD
    assert report.contact is not None and report.contact.frame == GAPS.index(min(GAPS))
    assert report.contact.mouth_distance == pytest.approx(min(GAPS), abs=0.1)
    assert report.flicker is not None and report.flicker.mean < 0.5 and report.flicker.frames == len(GAPS)
    assert report.lighting is not None and report.lighting.delta_e_output is not None


def test_video_report_shows_a_swapped_face_and_follows_a_given_plan(
    analyzer: DlibFaceAnalyzer,
    portraits: dict[int, np.ndarray],
    landmarks: dict[int, np.ndarray],
    references: dict[str, np.ndarray],
) -> None:
    frames, plan = _approach(portraits, landmarks, GAPS, swap_at=3)  # frame 3: subject 2 stands in for a
    contact = GAPS.index(min(GAPS))
    report = video_quality_report(
        frames, references, analyzer, THRESHOLD, plan_centres=plan, contact_index=contact, upsample=0
    )
    a, b = report.subjects
    assert a.frames_found == b.frames_found == len(GAPS)
    assert a.similarity_min is not None and a.similarity_min < THRESHOLD
    assert b.similarity_min is not None and b.similarity_min > THRESHOLD
    assert report.contact is not None and report.contact.frame == contact
    assert report.contact.mouth_distance == pytest.approx(min(GAPS), abs=0.1)
    assert report.flicker is not None and report.flicker.mean < 0.5
    centres = {s: p.mean(axis=1) for s, p in plan.items()}  # planned centres alone work too
    by_centres = video_quality_report(
        frames, references, analyzer, THRESHOLD, plan_centres=centres, upsample=0
    )
    assert [q.frames_found for q in by_centres.subjects] == [len(GAPS)] * 2
    with pytest.raises(ValueError, match="plan_centres"):
        video_quality_report(frames, references, analyzer, THRESHOLD, plan_centres={"a": centres["a"]})
