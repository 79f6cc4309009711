"""The seam at the contact (kiss_core.generation.quality.seam): constructed frames with known answers,
and the preview's own contact frame of a synthetic pair (composites, nobody real) with and without a
hard cut pasted where the faces meet."""

from __future__ import annotations

import tempfile

import cv2
import numpy as np
import pytest

from kiss_core.generation.quality import QualityThresholds, quality_problems
from kiss_core.generation.quality.seam import hull_mask, seam_ratio, seam_regions
from kiss_core.scene.choreography import plan_kiss
from kiss_core.schemas import VideoParams
from kiss_core.settings import Settings
from tests.support.studio import SyntheticStudio

LIMIT = QualityThresholds().seam
SHAPE = (240, 320)


def _round_face(centre: tuple[float, float], radius: float) -> np.ndarray:
    """68 'landmarks' on a circle: a face-sized convex region (jaw span 1.35 radii)."""
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    return np.stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)], axis=1)


def _texture(seed: int = 0) -> np.ndarray:
    """Skin-like texture: the same statistics everywhere, so no boundary is special."""
    noise = np.random.default_rng(seed).normal(0, 12, SHAPE).astype(np.float32)
    luma = np.clip(140 + cv2.GaussianBlur(noise, (0, 0), 1.5) * 3, 0, 255).astype(np.uint8)
    return np.repeat(luma[..., None], 3, axis=2)


def _brighter(frame: np.ndarray, where: np.ndarray, levels: int) -> np.ndarray:
    out = frame.copy()
    out[where] = np.clip(frame[where].astype(int) + levels, 0, 255).astype(np.uint8)
    return out


def test_a_uniform_texture_scores_about_one_and_a_hard_cut_along_the_boundary_far_above() -> None:
    front, back = _round_face((130, 120), 60), _round_face((200, 120), 60)
    frame = _texture()
    plain = seam_ratio(frame, front, back)
    assert plain is not None and 0.8 < plain < 1.2
    # The back face's visible part 40 levels brighter, with a hard edge: a layer pasted without blending.
    visible_back = hull_mask(back, SHAPE).astype(bool) & ~hull_mask(front, SHAPE).astype(bool)
    cut = seam_ratio(_brighter(frame, visible_back, 40), front, back)
    assert cut is not None and cut > LIMIT and cut > 2 * plain
    # The same step blended over 15 px (a feathered layer) is far less of a seam.
    soft = cv2.GaussianBlur(visible_back.astype(np.float32), (0, 0), 5.0)[..., None]
    blended = np.clip(frame + 40 * soft, 0, 255).astype(np.uint8)
    soft_cut = seam_ratio(blended, front, back)
    assert soft_cut is not None and soft_cut < cut - 0.5


def test_the_bands_follow_where_the_faces_meet_and_apart_there_is_nothing_to_measure() -> None:
    front, back = _round_face((130, 120), 60), _round_face((200, 120), 60)
    bands, interior = seam_regions(front, back, SHAPE)
    # Each band lies on one outline and within reach of the other face, never around the far sides.
    for band in bands:
        xs = np.nonzero(band)[1]
        assert band.sum() > 100 and xs.min() >= 130 and xs.max() <= 200
    assert not (interior & (bands[0] | bands[1])).any()
    assert seam_ratio(_texture(), _round_face((70, 120), 50), _round_face((250, 120), 50)) is None


@pytest.mark.slow
def test_the_previews_contact_is_under_the_threshold_and_a_pasted_cut_is_over_it() -> None:
    studio = SyntheticStudio(Settings(), tempfile.mkdtemp(prefix="seam_"))
    pair = studio.pair(0, 1)
    params = VideoParams(style="romantic")
    result = studio.produce(pair, params)
    contact = result.quality.contact
    assert contact is not None and contact.seam is not None and contact.seam < LIMIT
    assert not any("seam" in problem for problem in quality_problems(result.quality))

    plan = plan_kiss(pair.analyses, params)
    index = plan.contact_frame
    frame = _contact_frame(studio, result.keys["video"], index)
    landmarks = [plan.tracks[s].landmarks[index] for s in ("a", "b")]
    front, back = (landmarks, landmarks[::-1])[int(plan.front[index])]
    shape = frame.shape[:2]
    visible_back = hull_mask(back, shape).astype(bool) & ~hull_mask(front, shape).astype(bool)
    seamed = seam_ratio(_brighter(frame, visible_back, 40), *landmarks)
    assert seamed is not None and seamed > LIMIT
    failing = contact.model_copy(update={"seam": seamed})
    report = result.quality.model_copy(update={"contact": failing})
    assert any(problem.startswith("contact: seam") for problem in quality_problems(report))


def _contact_frame(studio: SyntheticStudio, key: str, index: int) -> np.ndarray:
    """The contact frame as the viewer gets it (decoded from the stored MP4)."""
    from kiss_core.media.video import decode_mp4

    frames, _ = decode_mp4(studio.store.get(key))
    return np.asarray(frames[index])
