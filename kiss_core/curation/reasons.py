"""Every reason a source clip or shot can be turned away, as a stable code (the manifest's `reasons`).

Codes are part of the dataset contract: reports count them, people filter on them; never rename one.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # Sidecar: decided before any frame is decoded.
    NO_SIDECAR = "no_sidecar"  # no <name>.json next to the clip
    BAD_SIDECAR = "bad_sidecar"  # not a JSON object, or a field of the wrong type
    LICENCE_NOT_ALLOWED = "licence_not_allowed"  # licence missing or not on the config's allow-list
    CONSENT_MISSING = "consent_missing"  # fewer consent references than people in the clip
    ORIGIN_MISSING = "origin_missing"  # neither origin URL nor source id
    # Listing: the file itself is not safe to open.
    UNSAFE_PATH = "unsafe_path"  # symlink, path outside SOURCE, `..` in a key
    BAD_FILENAME = "bad_filename"  # name is not valid UTF-8
    # Probe and decode.
    EMPTY_FILE = "empty_file"
    FILE_TOO_LARGE = "file_too_large"
    UNREADABLE = "unreadable"  # no container or no video stream PyAV can open
    TRUNCATED = "truncated"  # decoding stops early (broken data, or far fewer frames than the header says)
    FRAME_TOO_LARGE = "frame_too_large"  # width x height over the config's pixel limit (decode bomb)
    TOO_SMALL = "too_small"  # resolution under the minimum
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    BAD_FPS = "bad_fps"  # frame rate outside the allowed range
    VARIABLE_FPS = "variable_fps"  # frame intervals vary
    # Shots.
    SHOT_TOO_SHORT = "shot_too_short"  # every shot is shorter than the minimum
    JUMP_CUT = "jump_cut"  # the kiss is interrupted by a cut
    # Quality.
    BLURRED = "blurred"
    OVER_EXPOSED = "over_exposed"
    UNDER_EXPOSED = "under_exposed"
    BLOCKY = "blocky"  # heavy compression blocking
    # Temporal.
    CAMERA_MOTION = "camera_motion"  # shake or fast pans
    FLICKER = "flicker"
    # Faces.
    NO_FACE = "no_face"
    ONE_FACE = "one_face"
    THIRD_FACE = "third_face"
    FACES_TOO_SMALL = "faces_too_small"
    IDENTITY_INCONSISTENT = "identity_inconsistent"  # a track changes person (swap, look-alike cut)
    LANDMARKS_UNSTABLE = "landmarks_unstable"  # too few frames with both faces' landmarks stable
    # The kiss.
    NO_CONTACT = "no_contact"  # the mouths never meet
    KISS_INCOMPLETE = "kiss_incomplete"  # contact at the clip's start or end: no approach or separation
    SEGMENT_TOO_SHORT = "segment_too_short"


DESCRIPTIONS: dict[Reason, str] = {
    Reason.NO_SIDECAR: "No `<name>.json` sidecar next to the clip.",
    Reason.BAD_SIDECAR: "The sidecar is not a JSON object with the expected field types.",
    Reason.LICENCE_NOT_ALLOWED: "The sidecar's licence is missing or not in `licences`.",
    Reason.CONSENT_MISSING: "Fewer non-empty consent references than people (two) in the clip.",
    Reason.ORIGIN_MISSING: "The sidecar gives neither `origin` nor `source_id`.",
    Reason.UNSAFE_PATH: "A symlink, a path leaving SOURCE or a key with `..`: never opened.",
    Reason.BAD_FILENAME: "The file name is not valid UTF-8.",
    Reason.EMPTY_FILE: "Zero bytes.",
    Reason.FILE_TOO_LARGE: "Larger than `max_file_bytes`.",
    Reason.UNREADABLE: "PyAV finds no decodable video stream.",
    Reason.TRUNCATED: "Decoding stops early, or yields far fewer frames than the container declares.",
    Reason.FRAME_TOO_LARGE: "Frames over `max_frame_pixels` (refused before decoding a frame).",
    Reason.TOO_SMALL: "Shorter side under `min_short_side` pixels.",
    Reason.TOO_SHORT: "Shorter than `min_duration_s`.",
    Reason.TOO_LONG: "Longer than `max_duration_s` (split long videos upstream).",
    Reason.BAD_FPS: "Frame rate outside `min_fps`..`max_fps`.",
    Reason.VARIABLE_FPS: "Frame intervals vary by more than `max_interval_jitter`.",
    Reason.SHOT_TOO_SHORT: "Every shot is shorter than `min_shot_s`.",
    Reason.JUMP_CUT: "The kiss is interrupted by a cut (its closest point lies at a shot boundary).",
    Reason.BLURRED: "Frame sharpness (variance of the Laplacian) under `min_sharpness`.",
    Reason.OVER_EXPOSED: "Share of clipped highlights over `max_highlights`.",
    Reason.UNDER_EXPOSED: "Share of crushed shadows over `max_shadows`.",
    Reason.BLOCKY: "8x8 blockiness over `max_blockiness`.",
    Reason.CAMERA_MOTION: "Global frame-to-frame motion over `max_camera_motion` (shake, fast pans).",
    Reason.FLICKER: "Flicker of the face-free area over `max_flicker`.",
    Reason.NO_FACE: "No face on most sampled frames.",
    Reason.ONE_FACE: "Only one face on most sampled frames.",
    Reason.THIRD_FACE: "Three or more faces on `third_face_share` of the sampled frames.",
    Reason.FACES_TOO_SMALL: "The smaller face is under `min_face_px` / `min_face_frac` of the frame.",
    Reason.IDENTITY_INCONSISTENT: "A track's faces are not all one person (swap or look-alike cut).",
    Reason.LANDMARKS_UNSTABLE: "Both faces' landmarks usable and steady on fewer than `min_landmark_share`.",
    Reason.NO_CONTACT: "The mouths never come within `contact_distance` face widths.",
    Reason.KISS_INCOMPLETE: "The contact touches the clip's start or end (no approach or separation).",
    Reason.SEGMENT_TOO_SHORT: "Fewer than `min_frames` output frames fit around the contact.",
}


class Rejected(Exception):
    """A stage's verdict: the clip (or shot) is turned away for these reasons."""

    def __init__(self, *reasons: Reason, detail: str = ""):
        super().__init__(", ".join(reasons) + (f": {detail}" if detail else ""))
        self.reasons = list(dict.fromkeys(reasons))
        self.detail = detail
