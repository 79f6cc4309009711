"""Person segmentation: the subject (not the wall, not a second person), refined at the layer's resolution.

Photos are the synthetic subjects (composites of several faces, nobody real), analysed by the real
dlib analyzer, and scenes built from them: a head on a plain white wall, two people in one photo, a
very dark photo. The segmenter is MediaPipe's, from the mediapipe wheel.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kiss_core.media.geometry import apply_affine
from kiss_core.scene.layout import head_mask
from kiss_core.scene.segmentation import GRID, guided_filter, segment_person
from kiss_core.schemas import SubjectAnalysis
from tests.support.walls import on_wall

pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def subjects(analyzer) -> list[tuple[np.ndarray, SubjectAnalysis]]:
    from kiss_core.faces.synthetic import synthetic_subject

    photos = [synthetic_subject(i) for i in (0, 1)]
    return [(p, analyzer.analyze(p, "a")) for p in photos]


def photo_point(segmentation, point) -> tuple[int, int]:
    """The grid cell of a photo point."""
    x, y = (segmentation.to_grid[:, :2] @ np.asarray(point, float) + segmentation.to_grid[:, 2]).round()
    return int(np.clip(x, 0, GRID - 1)), int(np.clip(y, 0, GRID - 1))


def test_the_person_is_the_subject_not_the_wall(subjects, analyzer) -> None:
    photo, analysis = subjects[0]
    wall = on_wall(photo, np.asarray(analysis.landmarks), (900, 700), (210, 60))
    found = analyzer.analyze(wall, "a")
    segmentation = segment_person(wall, np.asarray(found.landmarks))
    person = segmentation.person
    x, y = photo_point(segmentation, np.asarray(found.landmarks).mean(axis=0))
    assert person[y, x] > 0.95
    # The wall: the frame's upper corners and the strips beside the head.
    assert person[:40, :40].max() < 0.05 and person[:40, -40:].max() < 0.05
    assert person.mean() < 0.4
    # At the photo's resolution: a hard edge of the wall is a steep step of the alpha, not a grid blur.
    h, w = wall.shape[:2]
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    alpha = segmentation.mask(identity, (w, h), guide=wall)
    row = int(np.asarray(found.landmarks)[30, 1])  # the nose tip's row crosses both cheeks
    steepest = np.abs(np.diff(alpha[row])).max()
    plain = segmentation.mask(identity, (w, h))
    assert steepest > 1.3 * np.abs(np.diff(plain[row])).max()


def test_a_second_person_is_left_out_of_the_subject(subjects, analyzer) -> None:
    """Two people in one photo: the largest face's person is the subject; `everyone` keeps both."""
    (first, first_analysis), (second, second_analysis) = subjects
    small = cv2.resize(second, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    canvas = on_wall(first, np.asarray(first_analysis.landmarks), (1100, 640), (40, 20))
    size = (small.shape[1], small.shape[0])
    beside = on_wall(small, np.asarray(second_analysis.landmarks) * 0.8, size, (0, 0))
    canvas[60 : 60 + small.shape[0], 600 : 600 + small.shape[1]] = beside
    found = analyzer.analyze(canvas, "a")
    landmarks = np.asarray(found.landmarks)
    assert landmarks[:, 0].mean() < 550  # the analyzer took the larger face, on the left
    segmentation = segment_person(canvas, landmarks)
    other = np.asarray(second_analysis.landmarks) * 0.8 + (600, 60)
    x, y = photo_point(segmentation, other.mean(axis=0))
    assert segmentation.person[y, x] < 0.05
    assert segmentation.everyone[y, x] > 0.9
    x, y = photo_point(segmentation, landmarks.mean(axis=0))
    assert segmentation.person[y, x] > 0.95


def test_a_very_dark_photo_still_has_its_head(subjects) -> None:
    photo, analysis = subjects[0]
    dark = (photo.astype(np.float32) * 0.08).astype(np.uint8)
    landmarks = np.asarray(analysis.landmarks)
    segmentation = segment_person(dark, landmarks)
    # The head polygon is always part of the person, whatever the model sees in the dark.
    head = head_mask(apply_affine(segmentation.to_grid, landmarks), (GRID, GRID))
    assert np.all(segmentation.person[head > 0.99] > 0.99)


def test_guided_filter_moves_a_soft_edge_onto_the_image_edge() -> None:
    """A blurry mask edge 6 px off the image's colour step moves to within 2 px of the step."""
    guide = np.full((40, 120, 3), 30, np.uint8)
    guide[:, 60:] = 220
    ramp = np.clip((np.arange(120, dtype=np.float32) - 66) / 16 + 0.5, 0, 1)
    source = np.tile(1 - ramp, (40, 1))  # 1 on the left, crossing 0.5 at x = 66
    out = guided_filter(guide, source, radius=12, eps=1e-3)
    assert int(np.argmax(source[20] < 0.5)) == 67  # first pixel below 0.5
    assert abs(int(np.argmax(out[20] < 0.5)) - 60) <= 2
    # A flat guide has no edge to snap to: the filter only smooths, the crossing stays put.
    flat = guided_filter(np.full_like(guide, 128), source, radius=12, eps=1e-3)
    assert abs(int(np.argmax(flat[20] < 0.5)) - 67) <= 1
