"""One curated segment at the training size: its first frames, its landmark tracks, its caption.

Clips are centre-cropped to the training aspect ratio and resized (area filter), and the tracks get the
same crop and scale, so the contact mask lands where the pixels are. A segment without tracks trains
with no contact weighting (its mask is empty).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kiss_core.curation.manifest import Segment
from kiss_core.media.video import decode_mp4


@dataclass(frozen=True)
class TrainingClip:
    """Frames (F, H, W, 3) uint8 RGB and landmarks (F, 2, 68, 2) in those frames' pixels."""

    segment_id: str
    caption: str
    frames: np.ndarray
    landmarks: np.ndarray | None
    valid: np.ndarray | None  # (F, 2) bool


def crop_box(width: int, height: int, target_w: int, target_h: int) -> tuple[int, int, int, int]:
    """The centred (x0, y0, w, h) of the source with the target's aspect ratio."""
    scale = min(width / target_w, height / target_h)
    w, h = round(target_w * scale), round(target_h * scale)
    return (width - w) // 2, (height - h) // 2, w, h


def load_clip(root: Path, segment: Segment, width: int, height: int, num_frames: int) -> TrainingClip:
    """The segment's first `num_frames` frames at width x height, with its tracks mapped alike."""
    frames, _ = decode_mp4(segment.clip_path(root).read_bytes())
    if len(frames) < num_frames:
        raise ValueError(
            f"segment {segment.segment_id[:16]}: {segment.clip} decodes to {len(frames)} frames, fewer than"
            f" `num_frames` {num_frames}"
        )
    frames = frames[:num_frames]
    src_h, src_w = frames.shape[1:3]
    x0, y0, w, h = crop_box(src_w, src_h, width, height)
    resized = np.stack(
        [
            cv2.resize(f[y0 : y0 + h, x0 : x0 + w], (width, height), interpolation=cv2.INTER_AREA)
            for f in frames
        ]
    )
    landmarks = valid = None
    tracks = segment.tracks_path(root)
    if tracks is not None:
        with np.load(tracks) as data:
            points = np.asarray(data["landmarks"], dtype=np.float32)[:num_frames]
            valid = np.asarray(data["valid"], dtype=bool)[:num_frames]
        landmarks = (points - np.array([x0, y0], np.float32)) * np.array([width / w, height / h], np.float32)
    return TrainingClip(segment.segment_id, segment.caption, resized, landmarks, valid)


def training_caption(caption: str, trigger_words: str) -> str:
    """The caption the model is trained on: the trigger words first, as the service's prompt puts them."""
    trigger = trigger_words.strip()
    return f"{trigger}. {caption.strip()}" if trigger else caption.strip()
