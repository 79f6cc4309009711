"""One curated segment at the training size: the frames around its contact, its landmark tracks, its caption.

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


def clip_size(segment: Segment, width: int, height: int) -> tuple[int, int]:
    """The training size for a segment: the configured one, turned to portrait for a portrait clip (curation
    writes 832x480 and 480x832), so no clip loses most of its frame to the crop."""
    if (segment.height > segment.width) != (height > width):
        return height, width
    return width, height


def window_start(segment: Segment, frame_count: int, num_frames: int) -> int:
    """First frame of the `num_frames` window: centred on the contact frame when the manifest has one (the
    kiss is what the LoRA should learn), else the segment's start."""
    if segment.contact_frame is None:
        return 0
    return max(0, min(segment.contact_frame - num_frames // 2, frame_count - num_frames))


def load_clip(root: Path, segment: Segment, width: int, height: int, num_frames: int) -> TrainingClip:
    """`num_frames` frames of the segment around its contact frame at width x height (swapped for a
    portrait clip, see `clip_size`), with its tracks mapped alike."""
    frames, _ = decode_mp4(segment.clip_path(root).read_bytes())
    if len(frames) < num_frames:
        raise ValueError(
            f"segment {segment.segment_id[:16]}: {segment.clip} decodes to {len(frames)} frames, fewer than"
            f" `num_frames` {num_frames}"
        )
    width, height = clip_size(segment, width, height)
    start = window_start(segment, len(frames), num_frames)
    frames = frames[start : start + num_frames]
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
            points = np.asarray(data["landmarks"], dtype=np.float32)[start : start + num_frames]
            valid = np.asarray(data["valid"], dtype=bool)[start : start + num_frames]
        landmarks = (points - np.array([x0, y0], np.float32)) * np.array([width / w, height / h], np.float32)
    return TrainingClip(segment.segment_id, segment.caption, resized, landmarks, valid)


def training_caption(caption: str, trigger_words: str) -> str:
    """The caption the model is trained on: the trigger words first, as the service's prompt puts them."""
    trigger = trigger_words.strip()
    return f"{trigger}. {caption.strip()}" if trigger else caption.strip()
