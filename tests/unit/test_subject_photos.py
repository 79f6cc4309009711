"""Several photos of one person (kiss_core.faces.subject_photos), on real photos: the scikit-image
astronaut under ordinary changes is one person, two of the six adults of insightface's t1.jpg are not;
the sharpest, largest, most frontal photo with open eyes is the one chosen."""

from __future__ import annotations

import numpy as np
import pytest

from kiss_core.errors import SubjectPhotosMismatch
from kiss_core.faces.analysis import DlibFaceAnalyzer
from kiss_core.faces.embedding import cosine_similarity
from kiss_core.faces.subject_photos import (
    CLOSED_EYES_FACTOR,
    best_photo,
    check_same_person,
    eye_aspect_ratio,
    mean_embedding,
    photo_score,
)
from kiss_core.schemas import Pose, SubjectAnalysis
from kiss_core.settings import FaceSettings
from tests.support.photo_variants import blurred, brighter, cropped, mirrored, rotated
from tests.support.photos import astronaut_rgb, t1_rgb

THRESHOLD = FaceSettings().same_person_threshold


@pytest.fixture(scope="module")
def astronaut(analyzer: DlibFaceAnalyzer) -> dict[str, SubjectAnalysis]:
    """The astronaut as sent, and four ordinary other photos of her, analysed."""
    photo = astronaut_rgb()
    changes = {"photo": photo, "mirrored": mirrored(photo), "cropped": cropped(photo)}
    changes |= {"brighter": brighter(photo), "rotated": rotated(photo), "blurred": blurred(photo)}
    return {name: analyzer.analyze(image, "a") for name, image in changes.items()}


@pytest.fixture(scope="module")
def two_people(analyzer: DlibFaceAnalyzer) -> list[SubjectAnalysis]:
    """Two different adults of t1.jpg (its first and third face from the left), each cut out alone."""
    photo = t1_rgb()
    faces = sorted(analyzer.detect(photo), key=lambda f: f.box[0])
    analyses = []
    for face in (faces[0], faces[2]):
        x0, y0, x1, y1 = face.box
        margin = 0.4 * face.width
        top, left = max(0, int(y0 - margin)), max(0, int(x0 - margin))
        cut = photo[top : int(y1 + margin), left : int(x1 + margin)]
        analyses.append(analyzer.analyze(np.ascontiguousarray(cut), "b"))
    return analyses


def test_one_person_under_ordinary_changes_passes_the_same_person_check(
    astronaut: dict[str, SubjectAnalysis],
) -> None:
    photos = [astronaut[n] for n in ("photo", "mirrored", "cropped", "brighter", "rotated")]
    check_same_person("a", photos, THRESHOLD)  # no error
    reference = np.asarray(astronaut["photo"].embedding)
    assert all(cosine_similarity(reference, np.asarray(p.embedding)) > 0.98 for p in photos)


def test_two_people_are_refused_naming_the_subject_and_the_photos(
    astronaut: dict[str, SubjectAnalysis], two_people: list[SubjectAnalysis]
) -> None:
    with pytest.raises(SubjectPhotosMismatch) as caught:
        check_same_person("b", two_people, THRESHOLD)
    error = caught.value
    assert error.subject == "b" and error.status == 422 and error.code == "subject_photos_mismatch"
    assert "subject_b" in error.detail and "photos 1 and 2" in error.detail
    (entry,) = error.errors or []
    assert entry["field"] == "subject_b" and entry["photos"] == [1, 2]
    assert entry["similarity"] < THRESHOLD == entry["threshold"]


def test_a_stranger_among_three_photos_is_named_in_each_pair_it_breaks(
    astronaut: dict[str, SubjectAnalysis], two_people: list[SubjectAnalysis]
) -> None:
    photos = [astronaut["photo"], astronaut["mirrored"], two_people[0]]
    with pytest.raises(SubjectPhotosMismatch) as caught:
        check_same_person("a", photos, THRESHOLD)
    assert [e["photos"] for e in caught.value.errors or []] == [[1, 3], [2, 3]]


def test_the_sharp_large_photo_is_chosen_over_a_blurred_and_a_smaller_one(
    analyzer: DlibFaceAnalyzer, astronaut: dict[str, SubjectAnalysis]
) -> None:
    import cv2

    photo = astronaut_rgb()
    size = (photo.shape[1] * 2 // 3, photo.shape[0] * 2 // 3)
    small = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
    smaller = analyzer.analyze(small, "a")
    photos = [astronaut["blurred"], smaller, astronaut["photo"]]
    assert best_photo(photos) == 2
    scores = [photo_score(p) for p in photos]
    assert scores[0] < scores[2] and scores[1] < scores[2], scores
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_a_turned_head_and_shut_eyes_lower_the_score(astronaut: dict[str, SubjectAnalysis]) -> None:
    photo = astronaut["photo"]
    quality = photo.quality.model_copy(update={"frontalness": 0.5})
    turned = photo.model_copy(update={"pose": Pose(yaw=60.0, pitch=0.0, roll=0.0), "quality": quality})
    landmarks = np.asarray(photo.landmarks, dtype=np.float64)
    for eye in (36, 42):  # lids shut: the upper lid's points onto the lower lid's
        landmarks[eye + 1], landmarks[eye + 2] = landmarks[eye + 5], landmarks[eye + 4]
    shut = photo.model_copy(update={"landmarks": [tuple(p) for p in landmarks]})
    assert eye_aspect_ratio(photo.landmarks) > 0.25 and eye_aspect_ratio(shut.landmarks) == pytest.approx(0.0)
    assert photo_score(shut) == pytest.approx(CLOSED_EYES_FACTOR * photo_score(photo))
    assert photo_score(turned) == pytest.approx(0.5 / photo.quality.frontalness * photo_score(photo))
    assert best_photo([shut, turned, photo]) == 2
    assert best_photo([photo, photo]) == 0, "the first of equals"


def test_the_mean_embedding_is_the_normalised_mean_of_the_unit_embeddings(
    astronaut: dict[str, SubjectAnalysis],
) -> None:
    embeddings = [np.asarray(astronaut[n].embedding) for n in ("photo", "mirrored", "rotated")]
    mean = mean_embedding(embeddings)
    assert mean.dtype == np.float32 and mean.shape == (128,)
    assert float(np.linalg.norm(mean)) == pytest.approx(1.0, abs=1e-6)
    units = [e / np.linalg.norm(e) for e in embeddings]
    expected = np.mean(units, axis=0)
    np.testing.assert_allclose(mean, expected / np.linalg.norm(expected), atol=1e-6)
    assert all(cosine_similarity(mean, e) > 0.99 for e in embeddings)
    single = mean_embedding(embeddings[:1])
    np.testing.assert_allclose(single, units[0], atol=1e-6)
    with pytest.raises(ValueError):
        mean_embedding([])
