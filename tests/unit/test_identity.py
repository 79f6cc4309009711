"""Identity similarity calibration on real photos (analysis only) and the identity conditioning."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from kiss_core.faces.analysis import ALIGNED_LEFT_EYE, DetectedFace, DlibFaceAnalyzer
from kiss_core.faces.embedding import cosine_similarity, normalize
from kiss_core.generation.conditioning import Conditioning, IdentityEncoder
from kiss_core.media.geometry import eye_centers
from kiss_core.media.images import decode_image
from kiss_core.settings import FaceSettings, LimitSettings
from tests.support.photos import astronaut_rgb, t1_rgb, to_bytes

THRESHOLD = FaceSettings().same_person_threshold


@pytest.fixture(scope="module")
def analyzer() -> DlibFaceAnalyzer:
    return DlibFaceAnalyzer(FaceSettings())


@pytest.fixture(scope="module")
def t1_faces(analyzer: DlibFaceAnalyzer) -> list[tuple[DetectedFace, np.ndarray]]:
    return analyzer.find_faces(t1_rgb())


def _nearest(
    found: list[tuple[DetectedFace, np.ndarray]], centre: np.ndarray
) -> tuple[DetectedFace, np.ndarray]:
    face, embedding = min(found, key=lambda item: float(np.linalg.norm(item[0].center - centre)))
    assert np.linalg.norm(face.center - centre) < 0.3 * face.width, "the same face was found again"
    return face, embedding


def test_cosine_similarity() -> None:
    a = np.array([1.0, 0.0, 0.0])
    assert cosine_similarity(a, a * 3) == pytest.approx(1.0)
    assert cosine_similarity(a, np.array([0.0, 2.0, 0.0])) == pytest.approx(0.0)
    assert cosine_similarity(a, -a) == pytest.approx(-1.0)
    assert cosine_similarity(a, np.zeros(3)) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        cosine_similarity(a, np.ones(4))
    assert np.linalg.norm(normalize(np.array([3.0, 4.0]))) == pytest.approx(1.0)


def test_embeddings_are_unit_length(t1_faces: list[tuple[DetectedFace, np.ndarray]]) -> None:
    for _, embedding in t1_faces:
        assert embedding.shape == (128,) and embedding.dtype == np.float32
        assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)


def test_different_people_are_below_the_threshold(
    analyzer: DlibFaceAnalyzer, t1_faces: list[tuple[DetectedFace, np.ndarray]]
) -> None:
    embeddings = [e for _, e in t1_faces]
    embeddings.append(np.asarray(analyzer.analyze(astronaut_rgb(), "a").embedding))
    similarities = [cosine_similarity(a, b) for a, b in itertools.combinations(embeddings, 2)]
    assert len(similarities) == 21
    assert max(similarities) < THRESHOLD


@pytest.mark.parametrize("change", ["half", "mirror", "jpeg"])
def test_the_same_face_survives_resize_mirror_and_jpeg(
    analyzer: DlibFaceAnalyzer, t1_faces: list[tuple[DetectedFace, np.ndarray]], change: str
) -> None:
    t1 = t1_rgb()
    height, width = t1.shape[:2]
    if change == "half":
        changed = cv2.resize(t1, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    elif change == "mirror":
        changed = np.ascontiguousarray(t1[:, ::-1])
    else:
        changed = decode_image(to_bytes(t1, "JPEG", quality=75), LimitSettings())
    found = analyzer.find_faces(changed)
    assert len(found) == 6
    for face, embedding in t1_faces:
        centre = face.center.copy()
        if change == "half":
            centre /= 2
        elif change == "mirror":
            centre[0] = width - centre[0]
        _, again = _nearest(found, centre)
        assert cosine_similarity(embedding, again) > THRESHOLD
        others = [e for f, e in t1_faces if f is not face]
        assert max(cosine_similarity(again, other) for other in others) < THRESHOLD


def test_identity_encoder_builds_aligned_crops(analyzer: DlibFaceAnalyzer) -> None:
    settings = FaceSettings(crop_size=128)
    photos = {"a": astronaut_rgb(), "b": np.ascontiguousarray(astronaut_rgb()[:, ::-1])}
    analyses = {subject: analyzer.analyze(photo, subject) for subject, photo in photos.items()}
    conditioning = IdentityEncoder(settings).encode(photos, analyses)
    assert isinstance(conditioning, Conditioning) and conditioning.backend == "preview"
    assert set(conditioning.subjects) == {"a", "b"}
    for subject, condition in conditioning.subjects.items():
        assert condition.subject == subject
        assert condition.crop.shape == (128, 128, 3) and condition.crop.dtype == np.uint8
        assert condition.crop_landmarks.shape == (68, 2)
        left, right = eye_centers(condition.crop_landmarks)
        assert left[1] == pytest.approx(right[1], abs=0.5)
        assert left[1] == pytest.approx(ALIGNED_LEFT_EYE[1] * 128, abs=0.5)
        assert np.linalg.norm(condition.embedding) == pytest.approx(1.0, abs=1e-5)
    a, b = conditioning.subjects["a"], conditioning.subjects["b"]
    assert cosine_similarity(a.embedding, b.embedding) > THRESHOLD  # the same woman, mirrored
    assert IdentityEncoder(settings).same_person(a.embedding, b.embedding)


def test_identity_encoder_needs_every_photo(analyzer: DlibFaceAnalyzer) -> None:
    analysis = analyzer.analyze(astronaut_rgb(), "a")
    with pytest.raises(ValueError, match="no photo"):
        IdentityEncoder().encode({}, {"a": analysis})
