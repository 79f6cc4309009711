"""dlib face analysis on the real photos shipped in the insightface and scikit-image wheels."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from kiss_core.errors import FaceNotFound, FaceTooSmall, ImageUnreadable
from kiss_core.faces.analysis import (
    ALIGNED_LEFT_EYE,
    ALIGNED_RIGHT_EYE,
    DlibFaceAnalyzer,
    aligned_crop,
    head_pose,
)
from kiss_core.media.geometry import eye_centers
from kiss_core.settings import FaceSettings, LimitSettings
from tests.support.photos import astronaut_bytes, astronaut_rgb, load_rgb, skimage_path, t1_rgb


@pytest.fixture(scope="module")
def analyzer() -> DlibFaceAnalyzer:
    return DlibFaceAnalyzer(FaceSettings())


@pytest.fixture(scope="module")
def t1() -> np.ndarray:
    return t1_rgb()


def _area(box: tuple[float, float, float, float]) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def test_t1_has_six_faces(analyzer: DlibFaceAnalyzer, t1: np.ndarray) -> None:
    faces = analyzer.detect(t1)
    assert len(faces) == 6
    for face in faces:
        assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float32
        assert 80 < face.width < 140  # the six heads are about the same size in this photo


def test_analyze_reports_all_faces_and_uses_the_largest(analyzer: DlibFaceAnalyzer, t1: np.ndarray) -> None:
    faces = analyzer.detect(t1)
    analysis = analyzer.analyze(t1, "a")
    assert analysis.subject == "a"
    assert analysis.faces_found == 6
    assert (analysis.image_width, analysis.image_height) == (1280, 886)
    assert _area(analysis.box) == pytest.approx(max(_area(f.box) for f in faces))
    assert len(analysis.landmarks) == 68 and len(analysis.embedding) == 128
    assert np.linalg.norm(analysis.embedding) == pytest.approx(1.0, abs=1e-4)


def test_landmarks_are_plausible(analyzer: DlibFaceAnalyzer, t1: np.ndarray) -> None:
    for face in analyzer.detect(t1):
        points = face.landmarks
        left, right = eye_centers(points)
        mouth = points[48:68].mean(axis=0)
        nose_tip = points[30]
        assert left[0] < right[0], "landmark 36-41 is the eye on the image's left"
        assert max(left[1], right[1]) < mouth[1], "eyes above the mouth"
        assert max(left[1], right[1]) < nose_tip[1] < mouth[1] + 1
        x0, y0, x1, y1 = face.box
        margin = 0.15 * face.width
        inner = points[17:68]  # brows, nose, eyes, mouth lie inside the (slightly grown) box
        assert (inner[:, 0] > x0 - margin).all() and (inner[:, 0] < x1 + margin).all()
        assert (inner[:, 1] > y0 - margin).all() and (inner[:, 1] < y1 + margin).all()


def test_astronaut(analyzer: DlibFaceAnalyzer) -> None:
    analysis = analyzer.analyze(astronaut_rgb(), "b")
    x0, y0, x1, _ = analysis.box
    assert 150 < x0 < 200 and 50 < y0 < 100 and 80 < x1 - x0 < 110  # her face, not the badge
    assert abs(analysis.pose.yaw) < 15 and abs(analysis.pose.pitch) < 15 and abs(analysis.pose.roll) < 10
    quality = analysis.quality
    assert quality.face_width_px == pytest.approx(x1 - x0)
    assert 35 < quality.interocular_px < 55
    assert quality.blur > 20 and 60 < quality.brightness < 230 and quality.clipped < 0.05
    assert quality.frontalness > 0.9


def test_analyze_bytes(analyzer: DlibFaceAnalyzer) -> None:
    assert analyzer.analyze_bytes(astronaut_bytes(), "a", LimitSettings()).faces_found >= 1
    with pytest.raises(ImageUnreadable) as info:
        analyzer.analyze_bytes(os.urandom(1000), "b", LimitSettings())
    assert info.value.subject == "b"


def _face_crop(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    x0, y0, x1, y1 = box
    pad = x1 - x0
    return image[max(0, int(y0 - pad)) : int(y1 + pad), max(0, int(x0 - pad)) : int(x1 + pad)].copy()


def test_mirroring_flips_yaw(analyzer: DlibFaceAnalyzer, t1: np.ndarray) -> None:
    # The woman on the right of t1.jpg turns towards the image's left.
    rightmost = max(analyzer.detect(t1), key=lambda f: f.box[0])
    crop = _face_crop(t1, rightmost.box)
    pose = analyzer.analyze(crop, "a").pose
    mirrored = analyzer.analyze(crop[:, ::-1].copy(), "a").pose
    assert pose.yaw < -15
    assert mirrored.yaw > 15
    assert mirrored.yaw == pytest.approx(-pose.yaw, abs=8)
    assert mirrored.pitch == pytest.approx(pose.pitch, abs=8)


def test_photo_without_a_face(analyzer: DlibFaceAnalyzer) -> None:
    coffee = load_rgb(skimage_path("coffee.png"))
    with pytest.raises(FaceNotFound) as info:
        analyzer.analyze(coffee, "b")
    assert info.value.subject == "b"
    assert "'b'" in info.value.detail
    gradient = np.tile(np.linspace(0, 255, 300, dtype=np.uint8)[None, :, None], (200, 1, 3))
    with pytest.raises(FaceNotFound):
        analyzer.analyze(gradient, "a")


def test_small_face_is_refused() -> None:
    strict = DlibFaceAnalyzer(FaceSettings(min_face_px=120))
    with pytest.raises(FaceTooSmall) as info:
        strict.analyze(astronaut_rgb(), "a")
    assert info.value.subject == "a"
    assert "91 pixels" in info.value.detail or "90 pixels" in info.value.detail


def test_tiny_face_in_a_downscaled_photo(analyzer: DlibFaceAnalyzer) -> None:
    small = cv2.resize(astronaut_rgb(), (200, 200), interpolation=cv2.INTER_AREA)  # face ~36 px wide
    with pytest.raises((FaceTooSmall, FaceNotFound)) as info:
        analyzer.analyze(small, "b")
    assert info.value.subject == "b"


def test_aligned_crop_puts_the_eyes_level_at_fixed_points(analyzer: DlibFaceAnalyzer, t1: np.ndarray) -> None:
    for face in analyzer.detect(t1):  # several of these heads are tilted
        crop, crop_landmarks, affine = aligned_crop(t1, face.landmarks, 256)
        assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
        assert crop_landmarks.shape == (68, 2) and affine.shape == (2, 3)
        left, right = eye_centers(crop_landmarks)
        assert left[1] == pytest.approx(right[1], abs=0.5), "eyes level"
        assert (left + right) / 2 == pytest.approx(np.array([0.5, ALIGNED_LEFT_EYE[1]]) * 256, abs=0.5)
        if abs(head_pose(face.landmarks, (1280, 886)).yaw) < 30:  # turned heads are scaled by eye-to-mouth
            assert left == pytest.approx(np.array(ALIGNED_LEFT_EYE) * 256, abs=0.5)
            assert right == pytest.approx(np.array(ALIGNED_RIGHT_EYE) * 256, abs=0.5)
        chin = crop_landmarks[8]
        assert 0.75 * 256 < chin[1] < 256, "the chin is inside the crop"


def test_one_analyzer_is_safe_to_share_between_threads(analyzer: DlibFaceAnalyzer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    photo = astronaut_rgb()
    expected = analyzer.analyze(photo, "a").embedding
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: analyzer.analyze(photo, "a").embedding, range(8)))
    assert all(np.allclose(r, expected) for r in results)
