"""The kept segment in the training format: resampled to 16 fps, scaled and cropped to 832x480 or
480x832 by orientation, 4k+1 frames, H.264; and its landmark tracks in the trimmed clip's pixels.

The source frames are those the analysis pass kept (`Decoded.frames`), or, where the clip did not fit
in `keep_decoded_mib`, a second decode pass up to the segment's end keeping one frame at a time; only
the frames the output shows are converted to RGB. Landmarks are predicted on every `track_every`-th
output frame (and the last) and interpolated between, `LANDMARK_CHUNK` output frames at a time before
those frames go to the encoder: run between x264's frames, the shape predictor's trees were out of
cache (1.9 ms a face instead of 1.1). The encode is the service's own `encode_mp4`, which converts RGB
to YUV 4:2:0 itself (`rgb_to_yuv420p`): libswscale's conversion inside the encode cost more than x264
itself on one core.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from kiss_core.curation.config import CurateConfig
from kiss_core.curation.decode import KeptFrame, iter_frames
from kiss_core.curation.faces import ShotFaces
from kiss_core.curation.kiss import Kiss
from kiss_core.generation.quality.faces import predict_landmarks
from kiss_core.media.video import encode_mp4


@dataclass(frozen=True)
class ExportedSegment:
    segment_id: str  # sha256 of the MP4's bytes
    mp4: bytes
    tracks_npz: bytes
    width: int
    height: int
    num_frames: int
    contact_frame: int


LANDMARK_CHUNK = 16  # output frames whose landmarks are predicted together (RGB held: 16 x 1.2 MB at 832x480)


def output_size(width: int, height: int, config: CurateConfig) -> tuple[int, int]:
    """832x480 for landscape (and square) sources, 480x832 for portrait ones."""
    if height > width:
        return config.out_short_side, config.out_long_side
    return config.out_long_side, config.out_short_side


def cover_transform(
    src: tuple[int, int], dst: tuple[int, int], centre_x: float, centre_y: float
) -> tuple[float, float, float]:
    """(scale, x0, y0): scale the source to cover `dst`, crop a window around the centre (source px)."""
    (sw, sh), (dw, dh) = src, dst
    scale = max(dw / sw, dh / sh)
    win_w, win_h = dw / scale, dh / scale
    x0 = float(np.clip(centre_x - win_w / 2, 0, sw - win_w))
    y0 = float(np.clip(centre_y - win_h / 2, 0, sh - win_h))
    return scale, x0, y0


def _frames_at(
    source: Path | Iterable[av.VideoFrame | KeptFrame],
    times: np.ndarray,
    converted: Mapping[int, np.ndarray] | None = None,
) -> Iterator[np.ndarray]:
    """For each wanted time, the RGB source frame shown then (the last one starting at or before it).

    `source`: the file (decoded here, up to the last wanted time) or its decoded frames in order.
    `converted`: frames already in RGB, by index (the analysis's samples), used where they are full size.
    Frames before the segment and frames the output rate skips are never converted.
    """
    wanted = 0
    converted = converted or {}
    previous: av.VideoFrame | KeptFrame | None = None
    rgb: np.ndarray | None = None  # `previous` converted, once however often it is shown

    def shown() -> np.ndarray:
        nonlocal rgb
        assert previous is not None
        if rgb is None:
            rgb = previous.to_ndarray(format="rgb24")
        return rgb

    for index, frame in enumerate(iter_frames(source) if isinstance(source, Path) else source):
        t = float(frame.time or 0.0)
        while wanted < len(times) and times[wanted] < t - 1e-6 and previous is not None:
            yield shown()
            wanted += 1
        if wanted >= len(times):
            return
        previous, rgb = frame, converted.get(index)
        if rgb is not None and rgb.shape[:2] != (frame.height, frame.width):
            rgb = None
    while previous is not None and wanted < len(times):
        yield shown()
        wanted += 1


def _fill_between(landmarks: np.ndarray, predicted: np.ndarray) -> None:
    """Landmarks (F, 68, 2) of one person: frames not predicted get the linear blend of the predicted
    frames around them (held before the first and after the last)."""
    known = np.flatnonzero(predicted)
    if known.size == 0:
        return
    frames = np.arange(len(landmarks))
    flat = landmarks.reshape(len(landmarks), -1)
    for column in range(flat.shape[1]):
        flat[:, column] = np.interp(frames, known, flat[known, column])


def export_segment(
    path: Path,
    kiss: Kiss,
    faces: ShotFaces,
    sample_times: np.ndarray,
    source_size: tuple[int, int],
    analysis_scale: float,
    config: CurateConfig,
    source_frames: Iterable[av.VideoFrame | KeptFrame] | None = None,
    converted: Mapping[int, np.ndarray] | None = None,
) -> ExportedSegment:
    """Re-encode [kiss.start_s, kiss.end_s] and predict both faces' landmarks on every output frame.

    `source_frames`: the clip's decoded frames in order, if the caller kept them (else `path` is decoded);
    `converted`: RGB source frames by index (used where full size) that need no converting again.
    """
    out_w, out_h = output_size(*source_size, config)
    times = kiss.start_s + np.arange(kiss.num_frames) / config.out_fps
    # Crop around where the faces are at the contact (source pixels).
    at = int(np.argmin(np.abs(sample_times - kiss.contact_s)))
    centre = faces.boxes[:, at].reshape(2, 2, 2).mean(axis=(0, 1)) / analysis_scale
    scale, x0, y0 = cover_transform(source_size, (out_w, out_h), float(centre[0]), float(centre[1]))
    affine = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], dtype=np.float64)

    # Boxes at every output time: interpolated between the sampled frames, mapped into output pixels.
    boxes = np.zeros((kiss.num_frames, 2, 4))
    for p in range(2):
        for k in range(4):
            boxes[:, p, k] = np.interp(times, sample_times, faces.boxes[p, :, k])
    boxes = boxes / analysis_scale * scale
    boxes[..., [0, 2]] -= x0 * scale
    boxes[..., [1, 3]] -= y0 * scale
    valid = np.zeros((kiss.num_frames, 2), dtype=bool)
    for p in range(2):
        seen = sample_times[faces.valid[:, p]]
        if seen.size:
            valid[:, p] = (times >= seen.min() - 1e-6) & (times <= seen.max() + 1e-6)

    landmarks = np.zeros((kiss.num_frames, 2, 68, 2), dtype=np.float32)
    predicted = np.zeros((kiss.num_frames, 2), dtype=bool)
    track_frames = set(range(0, kiss.num_frames, config.track_every)) | {kiss.num_frames - 1}

    identity = scale == 1.0 and x0 == 0.0 and y0 == 0.0 and source_size == (out_w, out_h)

    def outputs() -> Iterator[np.ndarray]:
        for source in _frames_at(path if source_frames is None else source_frames, times, converted):
            if identity:
                yield source
            else:
                yield cv2.warpAffine(
                    source,
                    affine,
                    (out_w, out_h),
                    flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE,
                )

    def frames() -> Iterator[np.ndarray]:
        shown = outputs()
        start = 0
        while chunk := list(itertools.islice(shown, LANDMARK_CHUNK)):
            for p in range(2):  # one face after the other: its trees stay in cache
                for i, out in enumerate(chunk, start):
                    box = boxes[i, p]
                    if i in track_frames and box[2] - box[0] > 4 and box[3] - box[1] > 4:
                        points = predict_landmarks(out, box, refine=0)  # boxes follow the refined samples
                        landmarks[i, p] = points
                        predicted[i, p] = True
            start += len(chunk)
            yield from chunk

    mp4 = encode_mp4(frames(), config.out_fps, config.crf, config.preset)
    for p in range(2):
        _fill_between(landmarks[:, p], predicted[:, p])
    buffer = io.BytesIO()
    np.savez_compressed(buffer, landmarks=landmarks, valid=valid)
    contact = round((kiss.contact_s - kiss.start_s) * config.out_fps)
    return ExportedSegment(
        segment_id=hashlib.sha256(mp4).hexdigest(),
        mp4=mp4,
        tracks_npz=buffer.getvalue(),
        width=out_w,
        height=out_h,
        num_frames=kiss.num_frames,
        contact_frame=int(np.clip(contact, 0, kiss.num_frames - 1)),
    )
