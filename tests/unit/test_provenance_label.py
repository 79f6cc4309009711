"""The visible "AI-generated" mark: on every frame, only inside its patch, where the settings put it."""

from __future__ import annotations

import numpy as np
import pytest

from kiss_core.generation.provenance.label import FrameLabeler
from kiss_core.settings import LabelSettings
from tests.support.clips import moving_clip

WIDTH, HEIGHT = 832, 480


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    return moving_clip(24, WIDTH, HEIGHT)


def labelled(settings: LabelSettings, frame: np.ndarray) -> tuple[np.ndarray, FrameLabeler]:
    labeler = FrameLabeler(settings, WIDTH, HEIGHT)
    out = frame.copy()
    labeler.apply(out)
    return out, labeler


def test_every_frame_carries_the_mark_and_nothing_else_changes(clip: list[np.ndarray]) -> None:
    labeler = FrameLabeler(LabelSettings(), WIDTH, HEIGHT)
    x0, y0, x1, y1 = labeler.box
    # Bottom-right by default, the text about 3.5 % of the frame height, inside the margin.
    assert x1 == WIDTH - 12 and y1 == HEIGHT - 12
    assert 100 < x1 - x0 < WIDTH // 4 and 20 < y1 - y0 < HEIGHT // 10
    for frame in clip:
        out = frame.copy()
        labeler.apply(out)
        outside = np.ones((HEIGHT, WIDTH), bool)
        outside[y0:y1, x0:x1] = False
        assert (out[outside] == frame[outside]).all()
        patch, before = out[y0:y1, x0:x1].astype(int), frame[y0:y1, x0:x1].astype(int)
        luma = patch.mean(axis=2)
        # Legible on any picture: white text on a darkened box.
        assert np.percentile(luma, 99) > 200
        assert np.median(luma) < 0.6 * np.median(before.mean(axis=2)) + 5
        assert np.abs(patch - before).mean() > 20


def test_text_is_anti_aliased(clip: list[np.ndarray]) -> None:
    out, labeler = labelled(LabelSettings(), clip[0])
    x0, y0, x1, y1 = labeler.box
    levels = np.unique(out[y0:y1, x0:x1].mean(axis=2).round())
    assert len(levels) > 40  # edges blend, not just box colour and text colour


@pytest.mark.parametrize(
    ("position", "left", "top"),
    [
        ("top-left", True, True),
        ("top-right", False, True),
        ("bottom-left", True, False),
        ("bottom-right", False, False),
    ],
)
def test_position_moves_the_mark(clip: list[np.ndarray], position: str, left: bool, top: bool) -> None:
    out, labeler = labelled(LabelSettings(position=position, margin=0.05), clip[0])
    x0, y0, x1, y1 = labeler.box
    margin = round(0.05 * HEIGHT)
    assert (x0 == margin) if left else (x1 == WIDTH - margin)
    assert (y0 == margin) if top else (y1 == HEIGHT - margin)
    changed = np.argwhere((out != clip[0]).any(axis=2))
    assert changed.min(axis=0).tolist() >= [y0, x0] and changed.max(axis=0).tolist() < [y1, x1]


def test_opacity_scales_the_change(clip: list[np.ndarray]) -> None:
    strong, labeler = labelled(LabelSettings(opacity=0.8), clip[0])
    faint, _ = labelled(LabelSettings(opacity=0.3), clip[0])
    x0, y0, x1, y1 = labeler.box
    before = clip[0][y0:y1, x0:x1].astype(int)
    change_strong = np.abs(strong[y0:y1, x0:x1].astype(int) - before).mean()
    change_faint = np.abs(faint[y0:y1, x0:x1].astype(int) - before).mean()
    assert change_faint < 0.5 * change_strong


@pytest.mark.parametrize("settings", [LabelSettings(opacity=0.0), LabelSettings(enabled=False)])
def test_transparent_or_disabled_leaves_frames_alone(clip: list[np.ndarray], settings: LabelSettings) -> None:
    out, labeler = labelled(settings, clip[0])
    assert not labeler.active and labeler.box == (0, 0, 0, 0)
    assert (out == clip[0]).all()


def test_scale_and_text_follow_settings(clip: list[np.ndarray]) -> None:
    _, small = labelled(LabelSettings(scale=0.03), clip[0])
    _, large = labelled(LabelSettings(scale=0.06), clip[0])
    _, short = labelled(LabelSettings(text="AI"), clip[0])
    height = lambda labeler: labeler.box[3] - labeler.box[1]  # noqa: E731
    width = lambda labeler: labeler.box[2] - labeler.box[0]  # noqa: E731
    assert height(large) > 1.7 * height(small)
    assert width(short) < width(small) / 3
    with pytest.raises(ValueError):
        LabelSettings(text="KI-generiert ✓")  # the Hershey font has ASCII glyphs only


def test_wrong_frame_is_refused() -> None:
    labeler = FrameLabeler(LabelSettings(), WIDTH, HEIGHT)
    with pytest.raises(ValueError, match="RGB uint8"):
        labeler.apply(np.zeros((240, 416, 3), np.uint8))
