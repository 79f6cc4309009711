"""MediaPipe's full-range face detector (kiss_core.faces.full_range_detector) against dlib's HOG.

The decoding is checked on constructed tensors with known answers; detection on the real photos in
the insightface and scikit-image wheels (analysis only) and on the preview's frames of a synthetic
pair (composites, nobody real) whose heads the romantic style turns by up to 44°.
"""

from __future__ import annotations

import functools
import tempfile

import numpy as np
import pytest

from kiss_core.faces.analysis import DetectedFace, DlibFaceAnalyzer
from kiss_core.faces.embedding import cosine_similarity
from kiss_core.faces.full_range_detector import (
    KEYPOINTS,
    FullRangeFaceDetector,
    decode,
    full_range_detector,
    iou,
    letterbox,
    ssd_anchors,
    weighted_nms,
)
from kiss_core.generation.quality import checked_frames, identity_report, video_quality_report
from kiss_core.generation.quality.faces import (
    MATCH_RADIUS,
    alone,
    faces_alone,
    hog_like_box,
    turned_faces,
    with_turned_faces,
)
from kiss_core.media.video import decode_mp4
from kiss_core.scene.choreography import KissPlan, face_centers, plan_kiss
from kiss_core.schemas import VideoParams
from kiss_core.settings import FaceSettings, Settings
from tests.support.frame_edits import one_face_at_the_contact, without_head
from tests.support.photos import astronaut_rgb, load_rgb, skimage_path, t1_rgb
from tests.support.studio import SyntheticPair, SyntheticStudio


@pytest.fixture(scope="module")
def detector() -> FullRangeFaceDetector:
    return full_range_detector()


@pytest.fixture(scope="module")
def analyzer() -> DlibFaceAnalyzer:
    return DlibFaceAnalyzer(FaceSettings())


def _best_iou(box: tuple[float, ...], others: list[tuple[float, ...]]) -> float:
    return float(iou(np.array(box), np.array(others).reshape(-1, 4)).max()) if others else 0.0


# --- decoding, on tensors with known answers ----------------------------------------------------


def test_anchors_are_the_48x48_grid_of_the_full_range_model_row_by_row() -> None:
    anchors = ssd_anchors()
    assert anchors.shape == (2304, 2)
    np.testing.assert_allclose(anchors[0], [0.5 / 48, 0.5 / 48])
    np.testing.assert_allclose(anchors[1], [1.5 / 48, 0.5 / 48])  # x runs fastest
    np.testing.assert_allclose(anchors[48], [0.5 / 48, 1.5 / 48])
    np.testing.assert_allclose(anchors[-1], [47.5 / 48, 47.5 / 48])


def test_decode_offsets_boxes_and_keypoints_from_their_anchor_and_thresholds_the_sigmoid() -> None:
    raw = np.zeros((2304, 16), dtype=np.float32)
    logits = np.full(2304, -1000.0, dtype=np.float32)  # clipped to -100: no overflow, score ~0
    k = 48 * 10 + 20  # anchor at ((20.5) / 48, (10.5) / 48)
    raw[k, :4] = (19.2, -9.6, 38.4, 57.6)  # centre +0.1/-0.05, w 0.2, h 0.3 (scale 192)
    raw[k, 4:6] = (-19.2, 0.0)  # right eye 0.1 left of the anchor
    logits[k] = 2.0  # sigmoid 0.881
    logits[k + 1] = 0.2  # sigmoid 0.55 < 0.6: dropped
    rows = decode(raw, logits)
    assert rows.shape == (1, 17)
    cx, cy = 20.5 / 48 + 0.1, 10.5 / 48 - 0.05
    np.testing.assert_allclose(rows[0, :4], [cx - 0.1, cy - 0.15, cx + 0.1, cy + 0.15], atol=1e-6)
    assert rows[0, 4] == pytest.approx(1 / (1 + np.exp(-2.0)))
    np.testing.assert_allclose(rows[0, 5:7], [20.5 / 48 - 0.1, 10.5 / 48], atol=1e-6)


def test_weighted_suppression_averages_overlapping_boxes_by_score_and_keeps_separate_ones() -> None:
    rows = np.zeros((3, 17))
    rows[0, :5] = (0.0, 0.0, 1.0, 1.0, 0.9)
    rows[1, :5] = (0.1, 0.0, 1.1, 1.0, 0.6)  # IoU 0.82 with the first: merged into it
    rows[2, :5] = (3.0, 3.0, 4.0, 4.0, 0.7)  # apart
    merged = weighted_nms(rows)
    assert len(merged) == 2
    np.testing.assert_allclose(merged[0, :4], [0.04, 0.0, 1.04, 1.0])  # (0.9 * 0 + 0.6 * 0.1) / 1.5
    assert merged[0, 4] == 0.9 and merged[1, 4] == 0.7


def test_the_letterbox_centres_the_frame_on_black_and_maps_back_to_its_pixels() -> None:
    frame = np.full((480, 832, 3), 255, dtype=np.uint8)
    tensor, side, corner = letterbox(frame)
    assert tensor.shape == (1, 192, 192, 3) and tensor.dtype == np.float32
    assert side == 832 and corner == pytest.approx((0.0, -176.0))
    assert tensor[0, 0, 96].tolist() == [-1.0, -1.0, -1.0]  # the black band above the frame
    assert tensor[0, 96, 0].tolist() == [1.0, 1.0, 1.0]  # the frame itself
    # A point at the frame's bottom-right corner sits at (1, 0.5 + 240/832) of the square.
    x, y = corner[0] + 1.0 * side, corner[1] + (0.5 + 240 / 832) * side
    assert (x, y) == pytest.approx((832.0, 480.0))


# --- real photos (analysis only) ----------------------------------------------------------------


def test_on_the_real_photos_it_finds_hogs_faces_and_nothing_else(
    detector: FullRangeFaceDetector, analyzer: DlibFaceAnalyzer
) -> None:
    t1, astronaut = t1_rgb(), astronaut_rgb()
    hog = [face.box for face in analyzer.detect(t1)]
    found = detector.detect(t1)
    assert len(hog) == 6
    # Every full-range face is one of HOG's six (no false positive), and five of the six are found
    # (the sixth, at the right edge, is 106 px in a 1280 px photo: 16 px in the 192 px input).
    assert all(_best_iou(face.box, hog) > 0.5 for face in found)
    assert sum(_best_iou(box, [f.box for f in found]) > 0.5 for box in hog) >= 5
    # The astronaut: her face, and not the badge HOG also reports as a face.
    hog_astronaut = sorted(analyzer.detect(astronaut), key=lambda f: f.box[1])
    assert len(hog_astronaut) == 2 and hog_astronaut[1].box[1] > 300  # the badge, low in the photo
    (face,) = detector.detect(astronaut)
    assert _best_iou(face.box, [hog_astronaut[0].box]) > 0.6 and face.score > 0.8
    # Keypoints where they belong: the person's right eye on the image's left, both inside the box.
    eyes = face.keypoints[[KEYPOINTS.index("right_eye"), KEYPOINTS.index("left_eye")]]
    assert eyes[0, 0] < eyes[1, 0]
    assert np.all((eyes >= face.box[:2]) & (eyes <= face.box[2:]))
    for name in ("coffee.png", "rocket.jpg"):
        assert detector.detect(load_rgb(skimage_path(name))) == []


def test_the_hog_like_box_frames_a_face_as_hog_does(
    detector: FullRangeFaceDetector, analyzer: DlibFaceAnalyzer
) -> None:
    for photo in (t1_rgb(), astronaut_rgb()):
        hog = [face.box for face in analyzer.detect(photo)]
        for face in detector.detect(photo):
            assert _best_iou(hog_like_box(face), hog) > 0.6


# --- the preview's frames of a synthetic pair ---------------------------------------------------


@pytest.fixture(scope="module")
def romantic_job() -> tuple[SyntheticStudio, SyntheticPair, np.ndarray, KissPlan]:
    """A romantic preview of synthetic subjects 2 and 3: the studio, the pair, the frames and the plan."""
    studio = SyntheticStudio(Settings(), tempfile.mkdtemp(prefix="face_detector_"))
    pair = studio.pair(2, 3)
    params = VideoParams(style="romantic")
    # One fixed job id: the watermark it carries moves the frames a little (see test_quality_thresholds).
    result = studio.produce(pair, params, "video_5eed0f0a1b2c3d4e5f607182")
    frames, _ = decode_mp4(studio.store.get(result.keys["video"]))
    return studio, pair, frames, plan_kiss(pair.analyses, params)


@pytest.fixture(scope="module")
def romantic(
    romantic_job: tuple[SyntheticStudio, SyntheticPair, np.ndarray, KissPlan],
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """The romantic preview's frames, planned face centres and turns."""
    _, _, frames, plan = romantic_job
    turn = np.maximum(plan.tracks["a"].turn, plan.tracks["b"].turn)
    return frames, face_centers(plan), turn


@pytest.mark.slow
def test_on_preview_frames_it_finds_the_faces_hog_finds_plus_turned_ones(
    detector: FullRangeFaceDetector,
    analyzer: DlibFaceAnalyzer,
    romantic: tuple[np.ndarray, dict[str, np.ndarray], np.ndarray],
) -> None:
    frames, _, turn = romantic
    frontal = [i for i in range(0, len(frames), 6) if turn[i] < 15]
    turned = [i for i in range(0, len(frames), 6) if turn[i] >= 40]
    assert len(frontal) >= 5 and len(turned) >= 5
    for index in frontal:  # both faces, found by both detectors at the same places
        hog = [face.box for face in analyzer.detect(frames[index], 0)]
        found = detector.detect(frames[index])
        assert len(hog) == len(found) == 2
        assert all(_best_iou(hog_like_box(face), hog) > 0.6 for face in found)
    for index in turned:  # heads turned 40-44°: HOG finds nothing, the full-range detector a face
        assert analyzer.detect(frames[index], 0) == []
        assert len(detector.detect(frames[index])) == 1


@pytest.mark.slow
def test_turned_faces_get_dlibs_landmarks_and_are_counted_only_near_one_person(
    analyzer: DlibFaceAnalyzer, romantic: tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]
) -> None:
    frames, centres, turn = romantic
    hold = int(np.argmax(turn))
    hog: list[DetectedFace] = analyzer.detect(frames[hold], 0)
    (added,) = turned_faces(frames[hold], hog)
    assert added.landmarks.shape == (68, 2)
    x0, y0, x1, y1 = added.box
    centre = added.landmarks.mean(axis=0)
    assert x0 < centre[0] < x1 and y0 < centre[1] < y1
    # At the hold both people are planned within reach of that one face: it is nobody's by position.
    at_hold = {s: c[hold] for s, c in centres.items()}
    assert _same(with_turned_faces(frames[hold], hog, at_hold), hog)
    (again,) = with_turned_faces(frames[hold], hog)[len(hog) :]
    assert again.box == added.box
    # Near one person only (the other planned far away), it counts.
    apart = {"a": at_hold["a"], "b": at_hold["b"] + (400.0, 0.0)}
    assert len(with_turned_faces(frames[hold], hog, apart)) == len(hog) + 1
    # HOG's own faces are kept as they are: a frontal frame adds nothing to them.
    first = analyzer.detect(frames[0], 0)
    assert len(first) == 2 and _same(with_turned_faces(frames[0], first), first)


@pytest.mark.slow
def test_at_the_hold_each_person_is_found_alone_where_the_whole_frame_shows_one_face(
    detector: FullRangeFaceDetector,
    analyzer: DlibFaceAnalyzer,
    romantic_job: tuple[SyntheticStudio, SyntheticPair, np.ndarray, KissPlan],
) -> None:
    _, pair, frames, plan = romantic_job
    turn = np.minimum(plan.tracks["a"].turn, plan.tracks["b"].turn)
    hold = [i for i in range(0, len(frames), 6) if turn[i] >= 40]
    assert len(hold) >= 5
    one_for_two: list[bool] = []
    for index in hold:
        # Nose to nose, both detectors read the two turned faces as one, between the two people.
        assert analyzer.detect(frames[index], 0) == [] and len(detector.detect(frames[index])) == 1
        planned = {s: track.landmarks[index] for s, track in plan.tracks.items()}
        seen = faces_alone(frames[index], planned)
        assert set(seen) == {"a", "b"}, index
        (face_a, image_a), (face_b, image_b) = seen["a"], seen["b"]
        assert face_a.center[0] < face_b.center[0]  # two faces, a's on the left
        for subject, (face, image) in seen.items():
            centre = planned[subject].mean(axis=0)
            assert np.linalg.norm(face.center - centre) <= MATCH_RADIUS * face.width
            assert face.landmarks.shape == (68, 2)
            # Described on the image it was seen in, it is still that person by the report's own gate.
            reference = np.asarray(pair.analyses[subject].embedding)
            assert cosine_similarity(analyzer.embed(image, face.landmarks), reference) >= 0.85
        assert not np.array_equal(image_a, image_b)
        # Nobody where the plan puts someone: a's face is not found far to the right of it...
        elsewhere = {"a": planned["a"] + np.array([300.0, 0.0]), "b": planned["b"] + np.array([300.0, 0.0])}
        assert "a" not in faces_alone(frames[index], elsewhere)
        # ...and with b's head painted out of the frame (inpainted, as the scene fills a hole), not b.
        assert "b" not in faces_alone(without_head(frames[index], planned["b"]), planned)
        # One face where the two meet (as if merged) shows a face to either side: it is not two people
        # (291 of 312 such frames in the bench's 12 pairs x 3 mouth kisses).
        for face in analyzer.detect(frames[0], 0):
            merged = one_face_at_the_contact(frames[0], face, frames[index], planned)
            one_for_two.append(len(faces_alone(merged, planned)) == 2)
    assert len(one_for_two) == 2 * len(hold) and sum(one_for_two) <= len(one_for_two) // 5, one_for_two


@pytest.mark.slow
def test_both_reports_find_both_people_at_the_hold_only_with_the_planned_landmarks(
    analyzer: DlibFaceAnalyzer,
    romantic_job: tuple[SyntheticStudio, SyntheticPair, np.ndarray, KissPlan],
) -> None:
    _, pair, frames, plan = romantic_job
    references = {s: np.asarray(a.embedding, dtype=np.float64) for s, a in pair.analyses.items()}
    landmarks = {s: track.landmarks for s, track in plan.tracks.items()}
    centres = face_centers(plan)
    checked = checked_frames(len(frames), 8, plan.contact_frame)
    with_landmarks = video_quality_report(
        list(frames), references, analyzer, 0.92, plan_centres=landmarks, max_checked=8, upsample=0
    )
    by_centres = video_quality_report(
        list(frames), references, analyzer, 0.92, plan_centres=centres, max_checked=8, upsample=0
    )
    assert with_landmarks.both_found is not None and by_centres.both_found is not None
    assert with_landmarks.both_found >= 0.8 > by_centres.both_found
    # The producer's report, on the same checked frames, counts the same way.
    report = functools.partial(
        identity_report,
        [frames[i] for i in checked],
        {s: c[checked] for s, c in centres.items()},
        references,
        analyzer,
        0.92,
        upsample=0,
    )
    plain = report()
    alone_too = report(planned_landmarks={s: m[checked] for s, m in landmarks.items()})
    assert plain.both_found is not None and alone_too.both_found is not None
    assert alone_too.both_found >= 0.8 > plain.both_found
    for before, after in zip(plain.subjects, alone_too.subjects, strict=True):
        assert after.frames_found > before.frames_found
        assert after.similarity_min is not None and after.similarity_min >= 0.85
    with pytest.raises(ValueError, match="planned_landmarks"):
        report(planned_landmarks={"a": landmarks["a"][checked]})


def test_alone_fills_everything_beyond_the_persons_own_profile_towards_the_partner() -> None:
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 200, (120, 200, 3), dtype=np.uint8)
    frame[:, :, 2] = 250  # the median colour is known in one channel at least
    left = np.stack([np.linspace(40, 90.4, 68), np.linspace(30, 90, 68)], axis=1)
    right = left + np.array([60.0, 0.0])
    before = frame.copy()
    shown = alone(frame, left, right)  # the partner is to the right: cut after x = 90.4
    assert np.array_equal(shown[:, :92], frame[:, :92]) and not np.array_equal(frame[:, 92:], shown[:, 92:])
    assert (shown[:, 92:] == shown[0, 92]).all() and shown[0, 92, 2] == 250
    shown = alone(frame, right, left)  # the partner is to the left: cut before x = 100
    assert np.array_equal(shown[:, 100:], frame[:, 100:]) and (shown[:, :100] == shown[0, 0]).all()
    assert np.array_equal(frame, before)  # the caller's frame is not written to


def _same(faces: list[DetectedFace], others: list[DetectedFace]) -> bool:
    return len(faces) == len(others) and all(f is o for f, o in zip(faces, others, strict=True))
