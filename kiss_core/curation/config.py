"""`CurateConfig`: every threshold of `kissgen curate`, loaded from the `--config` YAML.

Defaults were measured on preview-compositor clips of synthetic subjects and their broken variants
(tests/support/curation_corpus.py); docs/curation.md says what each number means.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_LICENCES = (
    "CC0-1.0",
    "CC-BY-4.0",
    "CC-BY-SA-4.0",
    "PDDL-1.0",
    "ODC-By-1.0",
    "kissgen-synthetic",  # clips the project renders from synthetic subjects
    "kissgen-contributor-agreement",  # footage under the contributor agreement (consent per person)
)


class CurateConfig(BaseModel):
    """Thresholds and formats of the curation pipeline; all fields optional in the YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Sources.
    extensions: tuple[str, ...] = Field(
        (".mp4", ".mov", ".webm", ".mkv"), description="Video file extensions listed in SOURCE (lower case)."
    )
    licences: tuple[str, ...] = Field(
        DEFAULT_LICENCES, description="Allowed sidecar licences: SPDX ids or named licences, exact match."
    )
    min_consent_refs: int = Field(
        2, ge=1, description="Consent references the sidecar must give (one per person)."
    )
    max_file_bytes: int = Field(2 * 1024**3, ge=1, description="Larger files are rejected before opening.")

    # Probe.
    min_short_side: int = Field(240, ge=16, description="Smallest accepted shorter frame side, pixels.")
    max_frame_pixels: int = Field(
        4096 * 2304, ge=1, description="Largest accepted width x height; refused before any frame is decoded."
    )
    min_duration_s: float = Field(1.5, gt=0, description="Shortest accepted clip, seconds.")
    max_duration_s: float = Field(
        30.0,
        gt=0,
        description="Longest accepted clip, seconds (bounds a worker's memory: split long videos).",
    )
    min_fps: float = Field(12.0, gt=0, description="Lowest accepted frame rate.")
    max_fps: float = Field(61.0, gt=0, description="Highest accepted frame rate.")
    max_interval_jitter: float = Field(
        0.25,
        ge=0,
        description="Largest frame-interval deviation from the median, as its share (VFR check).",
    )
    min_frame_share: float = Field(
        0.9, gt=0, le=1, description="Decoded frames below this share of the container's count: truncated."
    )

    # Sampling.
    sample_fps: float = Field(4.0, gt=0, description="Frames per second analysed for faces and quality.")
    analysis_max_side: int = Field(
        832, ge=160, description="Sampled frames are downscaled to this longer side before analysis."
    )

    keep_decoded_mib: float = Field(
        128.0,
        ge=0,
        description="The analysis pass keeps the decoded source frames (as decoded, YUV) for the export up"
        " to this many MiB a clip (a 5 s 832x480 clip at 24 fps: 72 MiB); a clip that needs more is decoded"
        " a second time for the export instead (0: always). Bounds a worker's memory.",
    )

    # Shots.
    cut_threshold: float = Field(
        0.12,
        gt=0,
        le=1,
        description="Bhattacharyya distance of consecutive frames' HSV histograms that is a cut.",
    )
    min_shot_s: float = Field(1.5, gt=0, description="Shots shorter than this are dropped, seconds.")

    # Quality (medians over a shot's sampled frames, at analysis size).
    min_sharpness: float = Field(
        110.0,
        ge=0,
        description="Lowest sharpness: 99th percentile of 8x8-tile variance of the Laplacian at 1/4 size.",
    )
    max_highlights: float = Field(
        0.15, ge=0, le=1, description="Highest share of pixels at >= 250 (clipped)."
    )
    max_shadows: float = Field(0.25, ge=0, le=1, description="Highest share of pixels at <= 5 (crushed).")
    max_blockiness: float = Field(
        1.6, gt=0, description="Highest ratio of luma steps on 8x8 block edges to steps inside blocks."
    )

    # Temporal.
    max_camera_motion: float = Field(
        8.0, ge=0, description="Highest 90th percentile of global frame-to-frame shift, px at 832 wide."
    )
    max_flicker: float = Field(
        2.0, ge=0, description="Highest mean flicker (0..255 luma) of the face-free area between samples."
    )

    # Faces.
    detect_every: int = Field(
        2,
        ge=1,
        description="HOG runs on every n-th sampled frame, the last, and the frames between two of those"
        " whose face counts differ (so the detections around the contact are those of HOG on every frame);"
        " the faces on the other frames are boxes interpolated from the detections around them, refined by"
        " the shape predictor (1: HOG on every sampled frame). Face shares are over the frames HOG ran on.",
    )
    upsample: int = Field(
        0, ge=0, le=2, description="HOG upsampling passes (0: faces >= ~80 px at analysis size)."
    )
    min_two_face_share: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Share of sampled frames that must show two faces (else one_face/no_face); the back face"
        " is often hidden during the contact, so this is low.",
    )
    third_face_share: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Share of sampled frames with three or more faces that rejects the shot.",
    )
    min_face_px: float = Field(
        64.0, ge=0, description="Smallest median face width at source resolution, pixels."
    )
    min_face_frac: float = Field(0.08, ge=0, le=1, description="Smallest median face width over frame width.")
    identity_threshold: float = Field(
        0.95,
        ge=-1,
        le=1,
        description="Lowest cosine (dlib descriptors) between any two faces of one track, on frames where the"
        " faces are apart. Within one shot a person scores >= 0.996 (measured on the clean corpus clips);"
        " another synthetic subject swapped in scores 0.918 (the service's photo-vs-video threshold: 0.92).",
    )
    embed_frames: int = Field(
        2,
        ge=2,
        description="Frames per track embedded, spread over the frames showing both faces apart (first and"
        " last included); each is a 75 ms dlib ResNet pass on one core. 2 compares the first with the last:"
        " a swap that lasts to the end of the shot is caught, one undone before the last embedded frame"
        " only if a middle frame is embedded too.",
    )
    max_landmark_jitter: float = Field(
        0.03,
        ge=0,
        description="Highest landmark residual after rigid alignment to its neighbours, face widths.",
    )
    min_landmark_share: float = Field(
        0.35, ge=0, le=1, description="Share of sampled frames where both faces' landmarks must be usable."
    )

    # The kiss.
    contact_distance: float = Field(
        0.3, gt=0, description="Mouth distance over face width under which the mouths touch (as the report)."
    )
    apart_distance: float = Field(
        0.5, gt=0, description="Mouth distance at which the approach starts / the separation ends."
    )
    margin_s: float = Field(
        0.5, ge=0, description="Context kept before the approach and after the separation."
    )
    peck_max_s: float = Field(1.1, gt=0, description="Contacts up to this long are pecks, seconds.")
    french_min_s: float = Field(2.0, gt=0, description="Contacts this long with a head tilt are french.")
    french_min_tilt_deg: float = Field(10.0, ge=0, description="Head roll during contact for french.")

    # Output.
    out_fps: int = Field(16, ge=1, le=60, description="Frame rate of the trimmed clips.")
    out_long_side: int = Field(
        832, ge=16, description="Longer side of the trimmed clips (832x480 or 480x832)."
    )
    out_short_side: int = Field(480, ge=16, description="Shorter side of the trimmed clips.")
    max_frames: int = Field(81, ge=5, description="Most frames of a trimmed clip (4k+1).")
    min_frames: int = Field(33, ge=5, description="Fewest frames of a trimmed clip (4k+1).")
    crf: int = Field(18, ge=0, le=51, description="x264 constant rate factor of the trimmed clips.")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"] = Field(
        "veryfast",
        description="x264 preset of the trimmed clips (as the service's videos). Measured on 832x480 renders"
        " at crf 18: veryfast 3.1 ms a frame, 66 KB for 65 frames; superfast 2.2 ms, 3.3x the bytes; faster"
        " 4.8 ms, 10 % more bytes; PSNR 44 dB for all (the crf sets the quality).",
    )
    track_every: int = Field(
        2,
        ge=1,
        description="Landmarks of the trimmed clip are predicted on every n-th output frame (and the last)"
        " and interpolated linearly between (1: predicted on every frame). Training's contact mask is"
        " grown by a share of the face width and pooled over 4 frames and 16 px tokens.",
    )

    @model_validator(mode="after")
    def _check(self) -> CurateConfig:
        for name in ("max_frames", "min_frames"):
            value = getattr(self, name)
            if value % 4 != 1:
                raise ValueError(f"`{name}` has to be a multiple of 4 plus 1 but is {value}")
        for name in ("out_long_side", "out_short_side"):
            value = getattr(self, name)
            if value % 2:
                raise ValueError(f"`{name}` has to be even (H.264 4:2:0) but is {value}")
        if self.min_frames > self.max_frames:
            raise ValueError(f"`min_frames` ({self.min_frames}) exceeds `max_frames` ({self.max_frames})")
        if self.apart_distance <= self.contact_distance:
            raise ValueError(
                f"`apart_distance` ({self.apart_distance}) has to exceed"
                f" `contact_distance` ({self.contact_distance})"
            )
        return self

    @classmethod
    def from_yaml(cls, path: Path | str | None) -> CurateConfig:
        """The config in `path` (a YAML mapping; None or an empty file: the defaults)."""
        if path is None:
            return cls()
        data: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ValueError(
                f"the curate config {path} has to be a YAML mapping but is {type(data).__name__}"
            )
        return cls.model_validate(data)
