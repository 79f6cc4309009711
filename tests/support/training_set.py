"""A tiny curated set in the contract's layout (manifest.parquet, clips/, tracks/), drawn from no one.

Each clip is two flat "faces" (the mean-face landmarks filled as skin-toned hulls with red lips) on a
coloured background, moving toward each other until the lips meet: plain synthetic frames, no person.
The landmarks the drawing used are the tracks (person 0 = left), so the contact mask is exact.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kiss_core.curation.manifest import write_manifest
from kiss_core.media.video import encode_mp4
from kiss_core.scene.layout import MEAN_FACE_68

CAPTION = "two people lean in and share a gentle kiss"


def _face(cx: float, cy: float, size: float, mirror: bool) -> np.ndarray:
    shape = MEAN_FACE_68.copy()
    if mirror:
        shape[:, 0] = 1.0 - shape[:, 0]
    return np.c_[cx + (shape[:, 0] - 0.5) * size, cy + (shape[:, 1] - 0.53) * size].astype(np.float32)


def draw_clip(index: int, frames: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(frames (F, H, W, 3) uint8, landmarks (F, 2, 68, 2) float32) of clip `index`."""
    rng = np.random.default_rng(index)
    background = rng.integers(40, 200, 3)
    skins = [rng.integers(120, 240, 3), rng.integers(120, 240, 3)]
    size = width * (0.36 + 0.04 * (index % 3))
    cy = height * (0.5 + 0.05 * ((index % 2) - 0.5))
    video = np.zeros((frames, height, width, 3), np.uint8)
    tracks = np.zeros((frames, 2, 68, 2), np.float32)
    for f in range(frames):
        gap = (1.0 - f / max(frames - 1, 1)) * 0.45 * width + 0.62 * size
        centres = (width / 2 - gap / 2, width / 2 + gap / 2)
        frame = np.empty((height, width, 3), np.uint8)
        frame[:] = background
        for person in range(2):
            points = _face(centres[person], cy, size, mirror=person == 1)
            tracks[f, person] = points
            hull = cv2.convexHull(points).round().astype(np.int32)
            cv2.fillPoly(frame, [hull], tuple(int(c) for c in skins[person]))
            lips = points[48:60].round().astype(np.int32).reshape(-1, 1, 2)
            cv2.fillPoly(frame, [lips], (200, 30, 50))
        video[f] = frame
    return video, tracks


def write_training_set(
    dest: Path,
    clips: int = 4,
    frames: int = 9,
    width: int = 64,
    height: int = 64,
    captions: bool = True,
    fps: int = 16,
) -> Path:
    """DEST with `clips` kept segments (and one rejected source row), as curation writes it."""
    (dest / "clips").mkdir(parents=True, exist_ok=True)
    (dest / "tracks").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for index in range(clips):
        video, tracks = draw_clip(index, frames, width, height)
        data = encode_mp4(list(video), fps=fps, crf=10)
        segment = hashlib.sha256(data).hexdigest()
        (dest / "clips" / f"{segment}.mp4").write_bytes(data)
        np.savez(dest / "tracks" / f"{segment}.npz", landmarks=tracks, valid=np.ones((frames, 2), bool))
        source = hashlib.sha256(f"synthetic-{index}".encode()).hexdigest()
        common = {
            "source_id": source,
            "source_path": f"synthetic/{index}.mp4",
            "licence": "CC0",
            "origin": "synthetic",
        }
        rows.append({**common, "kind": "source", "decision": "kept"})
        rows.append(
            {
                **common,
                "kind": "segment",
                "segment_id": segment,
                "decision": "kept",
                "clip": f"clips/{segment}.mp4",
                "tracks": f"tracks/{segment}.npz",
                "caption": CAPTION if captions else None,
                "style": "peck",
                "fps": float(fps),
                "width": width,
                "height": height,
                "num_frames": frames,
                "contact_frame": frames - 1,
            }
        )
    rows.append(
        {
            "kind": "source",
            "source_id": "f" * 64,
            "source_path": "synthetic/rejected.mp4",
            "decision": "rejected",
            "reasons": ["one_face"],
        }
    )
    write_manifest(dest, rows)
    return dest
