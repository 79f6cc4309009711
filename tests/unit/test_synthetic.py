"""Synthetic subjects: one detectable face each, far from every real source face and from each other."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kiss_core.faces import synthetic
from kiss_core.faces.analysis import DlibFaceAnalyzer
from kiss_core.faces.embedding import cosine_similarity
from kiss_core.media.geometry import eye_centers
from kiss_core.media.images import decode_image
from kiss_core.settings import FaceSettings, LimitSettings

THRESHOLD = FaceSettings().same_person_threshold


@pytest.fixture(scope="module")
def analyzer() -> DlibFaceAnalyzer:
    return DlibFaceAnalyzer(FaceSettings())


@pytest.fixture(scope="module")
def subjects() -> list[np.ndarray]:
    # Its cost (all subjects, source detection included) is measured in bench/component_costs.py.
    return [synthetic.synthetic_subject(i) for i in range(synthetic.SUBJECT_COUNT)]


@pytest.fixture(scope="module")
def subject_embeddings(analyzer: DlibFaceAnalyzer, subjects: list[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(analyzer.analyze(image, "a").embedding) for image in subjects]


@pytest.fixture(scope="module")
def source_embeddings(analyzer: DlibFaceAnalyzer) -> list[np.ndarray]:
    return [analyzer.embed(photo, face.landmarks) for photo, face in synthetic.source_faces()]


def test_source_photos_are_found_without_importing_their_packages() -> None:
    paths = synthetic.source_photos()
    assert paths["t1"].name == "t1.jpg" and paths["astronaut"].name == "astronaut.png"
    assert all(path.is_file() for path in paths.values())
    assert len(synthetic.source_faces()) == 7


def test_subjects_are_deterministic_portraits(subjects: list[np.ndarray]) -> None:
    assert synthetic.SUBJECT_COUNT >= 4
    for index, image in enumerate(subjects):
        assert image.shape == (600, 480, 3) and image.dtype == np.uint8
        assert np.array_equal(image, synthetic.synthetic_subject(index))
    assert synthetic.synthetic_subject(0, size=(320, 400)).shape == (400, 320, 3)
    with pytest.raises(ValueError, match="index"):
        synthetic.synthetic_subject(synthetic.SUBJECT_COUNT)


def test_each_subject_has_exactly_one_centred_face(
    analyzer: DlibFaceAnalyzer, subjects: list[np.ndarray]
) -> None:
    for image in subjects:
        faces = analyzer.detect(image)
        assert len(faces) == 1
        face = faces[0]
        assert 0.3 < face.width / 480 < 0.55, "the face is ~40% of the canvas width"
        assert abs(face.center[0] - 240) < 20 and abs(face.center[1] - 300) < 40
        # Mirrored averaging makes them frontal: nose on the midline between the eyes, eyes level.
        left, right = eye_centers(face.landmarks)
        assert abs(face.landmarks[30, 0] - (left[0] + right[0]) / 2) < 3
        assert abs(left[1] - right[1]) < 3


def test_the_sources_themselves_are_different_people(source_embeddings: list[np.ndarray]) -> None:
    for a, b in itertools.combinations(source_embeddings, 2):
        assert cosine_similarity(a, b) < THRESHOLD


def test_subjects_are_nobody_from_the_sources(
    subject_embeddings: list[np.ndarray], source_embeddings: list[np.ndarray]
) -> None:
    for subject in subject_embeddings:
        assert max(cosine_similarity(subject, source) for source in source_embeddings) < THRESHOLD


def test_subjects_are_different_from_each_other(subject_embeddings: list[np.ndarray]) -> None:
    for a, b in itertools.combinations(subject_embeddings, 2):
        assert cosine_similarity(a, b) < THRESHOLD


def test_png_bytes_decode_to_the_same_subject(subjects: list[np.ndarray]) -> None:
    data = synthetic.synthetic_subject_png(1)
    assert data.startswith(b"\x89PNG")
    assert np.array_equal(decode_image(data, LimitSettings(), "b"), subjects[1])
