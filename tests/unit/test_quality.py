"""identity_report on frames built from synthetic subjects (never real people)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kiss_core.faces import DlibFaceAnalyzer
from kiss_core.quality import identity_report
from kiss_core.settings import FaceSettings
from kiss_core.synthetic import synthetic_subject

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
        assert quality.frames_found == 0 and quality.frames_checked == 2
        assert quality.similarity_min is None and quality.similarity_mean is None


def test_centres_must_match_the_frames(analyzer: DlibFaceAnalyzer, references: dict[str, np.ndarray]) -> None:
    frames = [np.zeros((64, 64, 3), dtype=np.uint8)]
    with pytest.raises(ValueError, match="expected_centers"):
        identity_report(
            frames, {"a": np.zeros((2, 2)), "b": np.zeros((1, 2))}, references, analyzer, THRESHOLD
        )
