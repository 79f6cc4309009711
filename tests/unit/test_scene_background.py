"""The scene: one photo's background with its people inpainted away, chosen by the request or automatically.

And the bad inputs of issue 14 rendered end to end: a person cut off at the chin, a head against a
plain white wall, two people in one photo, a very dark photo. Photos are the synthetic subjects
(composites of several faces, nobody real), analysed by the real dlib analyzer.
"""

from __future__ import annotations

import cv2
import numpy as np
import pydantic
import pytest

from kiss_core.media.geometry import apply_affine
from kiss_core.scene.background import (
    choose_background,
    cover_transform,
    photo_scene,
    usable_background,
)
from kiss_core.scene.choreography import plan_kiss
from kiss_core.scene.render import PreviewCompositor
from kiss_core.scene.segmentation import segment_person
from kiss_core.schemas import SubjectAnalysis, VideoParams
from tests.support.walls import WALL, on_wall

pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def pair(analyzer) -> tuple[dict[str, np.ndarray], dict[str, SubjectAnalysis]]:
    from kiss_core.faces.synthetic import synthetic_subject

    photos = {"a": synthetic_subject(0), "b": synthetic_subject(1)}
    return photos, {s: analyzer.analyze(p, s) for s, p in photos.items()}


@pytest.fixture(scope="module")
def two_people(pair, analyzer) -> tuple[np.ndarray, SubjectAnalysis, np.ndarray]:
    """One photo of two people on a wall: subject 0 large on the left, subject 1 smaller on the right."""
    photos, analyses = pair
    small = cv2.resize(photos["b"], None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    canvas = on_wall(photos["a"], np.asarray(analyses["a"].landmarks), (1100, 640), (40, 20))
    size = (small.shape[1], small.shape[0])
    canvas[60 : 60 + small.shape[0], 600 : 600 + small.shape[1]] = on_wall(
        small, np.asarray(analyses["b"].landmarks) * 0.8, size, (0, 0)
    )
    other = np.asarray(analyses["b"].landmarks) * 0.8 + (600, 60)
    return canvas, analyzer.analyze(canvas, "a"), other


def test_choices_are_kept_and_auto_takes_the_photo_with_more_background(pair) -> None:
    photos, analyses = pair
    near = segment_person(photos["a"], np.asarray(analyses["a"].landmarks))
    # The same face, small in a big photo of wall: far more background.
    wide = on_wall(photos["b"], np.asarray(analyses["b"].landmarks), (1400, 1000), (460, 200))
    far_landmarks = np.asarray(analyses["b"].landmarks) + np.array([460, 200])
    far = segment_person(wide, far_landmarks)
    assert usable_background(far) > usable_background(near) + 0.2
    segmentations = {"a": near, "b": far}
    assert choose_background("auto", segmentations) == "b"
    assert choose_background("auto", {"a": far, "b": near}) == "a"
    for choice in ("a", "b", "blur"):
        assert choose_background(choice, segmentations) == choice
    with pytest.raises(ValueError, match="'c'"):
        choose_background("c", segmentations)


def test_auto_falls_back_to_the_blur_when_people_fill_both_photos(pair) -> None:
    photos, analyses = pair
    crop = {s: photos[s][150:450, 120:360] for s in "ab"}  # face only: little background left
    segmentations = {
        s: segment_person(np.ascontiguousarray(crop[s]), np.asarray(analyses[s].landmarks) - (120, 150))
        for s in "ab"
    }
    assert max(usable_background(v) for v in segmentations.values()) < 0.3
    assert choose_background("auto", segmentations) == "blur"


def test_the_scene_has_its_person_inpainted_away(pair) -> None:
    """A head on a white wall: where the head was, the scene is wall, not skin."""
    photos, analyses = pair
    landmarks = np.asarray(analyses["a"].landmarks)
    photo = on_wall(photos["a"], landmarks, (800, 800), (160, 100))
    landmarks = landmarks + np.array([160, 100])
    scene = photo_scene(photo, segment_person(photo, landmarks), 832, 480, mirrored=False)
    assert scene.shape == (480, 832, 3) and scene.dtype == np.uint8
    face = apply_affine(cover_transform(photo.shape[:2], 832, 480, False), landmarks)
    x, y = face.mean(axis=0).round().astype(int)
    skin = photo[tuple(landmarks[29].round().astype(int))[::-1]].astype(int)
    patch = scene[y - 5 : y + 6, x - 5 : x + 6].reshape(-1, 3).mean(axis=0)
    assert np.abs(patch - WALL).max() < 12, (patch, skin)
    assert np.abs(skin - WALL).max() > 40  # the face really was a different colour


def test_a_second_person_is_removed_from_the_scene_too(two_people) -> None:
    photo, analysis, other = two_people
    segmentation = segment_person(photo, np.asarray(analysis.landmarks))
    scene = photo_scene(photo, segmentation, 832, 480, mirrored=False)
    where = apply_affine(cover_transform(photo.shape[:2], 832, 480, False), other)
    x, y = where.mean(axis=0).round().astype(int)
    patch = scene[y - 4 : y + 5, x - 4 : x + 5].reshape(-1, 3).mean(axis=0)
    assert np.abs(patch - WALL).max() < 12


def test_the_request_names_a_bad_background() -> None:
    for choice in ("auto", "a", "b", "blur"):
        assert VideoParams(background=choice).background == choice
    assert VideoParams().background == "auto"
    with pytest.raises(pydantic.ValidationError, match="background"):
        VideoParams.model_validate({"background": "c"})


def render_ok(photos: dict[str, np.ndarray], analyses: dict[str, SubjectAnalysis], background: str = "auto"):
    """Render a short clip; check every frame has both faces where the plan puts them."""
    plan = plan_kiss(analyses, VideoParams(seconds=1, fps=8, size="416x240", style="romantic"))
    compositor = PreviewCompositor()
    scene = compositor.scene(plan, photos, analyses, background)
    frames = list(compositor.frames(plan, scene))
    assert len(frames) == plan.frame_count
    for subject in "ab":
        x, y = plan.tracks[subject].landmarks[0, 27:36].mean(axis=0).round().astype(int)  # the nose
        patch = frames[0][y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(axis=0)
        assert np.abs(patch - scene.background[y, x]).max() > 12, subject  # a face, not the scene
    return plan, scene, frames


def test_a_person_cut_off_at_the_chin_fades_out_there(pair) -> None:
    photos, analyses = pair
    chin = int(np.asarray(analyses["b"].landmarks)[8, 1]) + 3
    cut = np.ascontiguousarray(photos["b"][:chin])
    cut_analysis = analyses["b"].model_copy(update={"image_height": chin})
    plan, _, frames = render_ok({"a": photos["a"], "b": cut}, {"a": analyses["a"], "b": cut_analysis})
    # Below b's chin the frame fades from the person to the scene: no row steps like a cut edge
    # (measured 22; without the fade at the layer's border, 75).
    x = int(plan.tracks["b"].landmarks[0, 8, 0])
    y = int(plan.tracks["b"].landmarks[0, 8, 1])
    column = frames[0][y : min(y + 80, plan.height), x - 3 : x + 4].astype(np.float32).mean(axis=1)
    assert np.abs(np.diff(column, axis=0)).max() < 40


def test_a_head_on_a_plain_white_wall(pair) -> None:
    photos, analyses = pair
    landmarks = np.asarray(analyses["b"].landmarks)
    wall = on_wall(photos["b"], landmarks, (700, 700), (110, 60))
    shifted = (landmarks + np.array([110, 60])).tolist()
    moved = analyses["b"].model_copy(update={"image_width": 700, "image_height": 700, "landmarks": shifted})
    _, scene, _ = render_ok({"a": photos["a"], "b": wall}, {"a": analyses["a"], "b": moved})
    assert scene.choice == "b"  # the wall is the photo with more background
    assert scene.background.mean() > 200  # a white room, the head removed from it


def test_two_people_in_one_photo(pair, two_people) -> None:
    photos, analyses = pair
    photo, analysis, _ = two_people
    _, scene, _ = render_ok({"a": photo, "b": photos["b"]}, {"a": analysis, "b": analyses["b"]}, "a")
    assert scene.choice == "a"


def test_a_very_dark_photo(pair) -> None:
    photos, analyses = pair
    dark = (photos["a"].astype(np.float32) * 0.08).astype(np.uint8)
    render_ok({"a": dark, "b": photos["b"]}, analyses)


def test_the_requests_scene_reaches_every_frame_of_the_job(tmp_path) -> None:
    """VideoParams.background travels in the plan: the producer's video shows that scene, not auto's."""
    from kiss_core.media.video import decode_mp4
    from kiss_core.settings import Settings
    from tests.support.studio import SyntheticStudio

    studio = SyntheticStudio(Settings(), str(tmp_path))
    pair = studio.pair(0, 1)
    first = {}
    for choice in ("a", "b", "blur"):
        params = VideoParams(style="peck", seconds=1, fps=8, size="416x240", background=choice)
        assert plan_kiss(pair.analyses, params).background == choice
        frames, _ = decode_mp4(studio.store.get(studio.produce(pair, params).keys["video"]))
        first[choice] = frames[0].astype(np.float32)
    corner = (slice(0, 40), slice(0, 60))  # backdrop only: the people stand in the middle
    differ = {
        (x, y): float(np.abs(first[x][corner] - first[y][corner]).mean())
        for x, y in (("a", "b"), ("a", "blur"), ("b", "blur"))
    }
    assert min(differ.values()) > 3.0, differ
