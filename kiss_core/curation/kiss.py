"""The kiss in a shot: approach → contact → separation from the two mouth tracks, the segment to keep,
the style it most resembles and its caption.

Mouth distance is the quality report's: |mouth a - mouth b| over the mean face width (jaw span);
for a kiss on the cheek, a mouth to the other's near cheek. Under `contact_distance` they touch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kiss_core.curation.config import CurateConfig
from kiss_core.curation.reasons import Reason, Rejected
from kiss_core.faces.analysis import head_pose
from kiss_core.faces.synthetic import MIRROR_68
from kiss_core.media.geometry import CHEEK_LEFT, MOUTH, face_width
from kiss_core.safety.prompt import STYLE_PROMPTS, TEMPLATE

CHEEK_RIGHT = MIRROR_68[CHEEK_LEFT]  # the same cheek points on the image's right side of a face


@dataclass(frozen=True)
class Kiss:
    """Times in the source clip's seconds."""

    start_s: float  # segment to keep (margins included)
    end_s: float
    num_frames: int  # output frames (4k+1)
    contact_s: float  # first contact
    contact_duration_s: float
    min_distance: float
    tilt_deg: float
    style: str
    caption: str


def mouth_distances(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S,) lips-to-lips and (S,) nearest mouth-to-cheek distances over the mean face width.

    `landmarks` (S, 2, 68, 2), person 0 on the left: 0's mouth to 1's left cheek, 1's mouth to 0's right.
    """
    mouth = landmarks[:, :, MOUTH].mean(axis=2)  # (S, 2, 2)
    widths = np.array([[face_width(p) for p in frame] for frame in landmarks]).mean(axis=1)
    widths = np.maximum(widths, 1.0)
    lips = np.linalg.norm(mouth[:, 0] - mouth[:, 1], axis=1) / widths
    to_cheek_1 = np.linalg.norm(mouth[:, 0] - landmarks[:, 1, CHEEK_LEFT].mean(axis=1), axis=1)
    to_cheek_0 = np.linalg.norm(mouth[:, 1] - landmarks[:, 0, CHEEK_RIGHT].mean(axis=1), axis=1)
    return lips, np.minimum(to_cheek_0, to_cheek_1) / widths


def caption_for(style: str) -> str:
    """The service's prompt template for this style (no scene addition): train on what we prompt with."""
    return TEMPLATE.format(action=STYLE_PROMPTS[style], scene="")


def odd_frames(count: int) -> int:
    """The largest 4k+1 not above `count` (0 when below 1)."""
    return 0 if count < 1 else (count - 1) // 4 * 4 + 1


def find_kiss(
    times: np.ndarray,
    landmarks: np.ndarray,
    valid: np.ndarray,
    shot: tuple[float, float],
    cut_at: tuple[bool, bool],
    frame_size: tuple[int, int],
    config: CurateConfig,
    scores: dict[str, float],
) -> Kiss:
    """The kiss segment of one shot, or Rejected (no contact, cut in the kiss, incomplete, too short).

    `times` (S,) of the sampled frames; `shot` its [start, end] seconds; `cut_at` whether the shot's
    start / end is a cut (else the clip's start / end).
    """
    both = valid.all(axis=1)
    lips, cheek = mouth_distances(landmarks)
    if not both.any():
        raise Rejected(Reason.NO_CONTACT, detail="never both mouths")
    # Lips, unless the lips never meet and a mouth reaches the other's cheek.
    on_cheek = bool(lips[both].min() > config.contact_distance >= cheek[both].min())
    distance = np.where(both, cheek if on_cheek else lips, np.inf)
    closest = int(np.argmin(distance))
    scores["score_min_mouth_distance"] = float(distance[closest])
    n = len(times)
    # At the cut: no sample with both faces lies between the closest one and a shot edge that is a cut.
    # Right before a cut the faces are closest and HOG often loses the back one, so the edge sample
    # itself may have no landmarks; the approach still ends at the cut.
    seen = np.flatnonzero(both)
    if (closest == seen[0] and cut_at[0]) or (closest == seen[-1] and cut_at[1]):
        raise Rejected(Reason.JUMP_CUT, detail=f"closest mouths at the cut, {times[closest]:.2f} s")
    if distance[closest] > config.contact_distance:
        raise Rejected(Reason.NO_CONTACT, detail=f"closest {distance[closest]:.2f} face widths")
    # The contact spans the first to the last sample where the mouths touch: in between, the back face
    # is hidden and its landmarks (predicted on an interpolated box) drift, so gaps are not separations.
    touching = np.flatnonzero(distance <= config.contact_distance)
    first, last = int(touching[0]), int(touching[-1])
    before = [i for i in range(first) if distance[i] >= config.apart_distance]
    after = [
        i for i in range(last + 1, n) if distance[i] >= config.apart_distance and np.isfinite(distance[i])
    ]
    if not before or not after:
        edge_is_cut = cut_at[0] if not before else cut_at[1]
        raise Rejected(
            Reason.JUMP_CUT if edge_is_cut else Reason.KISS_INCOMPLETE,
            detail="no approach" if not before else "no separation",
        )
    step = 1.0 / config.sample_fps
    # The contact frame: the first sampled frame where the lips meet (under `contact_distance`). The
    # back face is hidden from then on, so the distance is not read finer than that.
    contact_s = float(times[first])
    contact_duration = float(times[last] - times[first]) + step
    scores["score_contact_s"] = contact_duration
    rolls = [
        abs(head_pose(landmarks[i, p], frame_size).roll) for i in range(first, last + 1) for p in range(2)
    ]
    tilt = float(np.median(rolls))
    scores["score_head_tilt_deg"] = tilt
    if on_cheek:
        style = "cheek"
    elif contact_duration <= config.peck_max_s:
        style = "peck"
    elif contact_duration >= config.french_min_s and tilt >= config.french_min_tilt_deg:
        style = "french"
    else:
        style = "romantic"

    start = max(shot[0], float(times[before[-1]]) - config.margin_s)
    end = min(shot[1], float(times[after[0]]) + config.margin_s)
    fps = config.out_fps
    span = (config.max_frames - 1) / fps
    if end - start > span:  # too long: centre the window on the contact
        middle = (float(times[first]) + float(times[last])) / 2
        start = min(max(shot[0], middle - span / 2), shot[1] - span)
        end = start + span
    frames = odd_frames(int(np.floor((end - start) * fps + 1e-6)) + 1)
    if frames < config.min_frames:  # too short: grow around the contact inside the shot
        need = (config.min_frames - 1) / fps
        if shot[1] - shot[0] < need:
            raise Rejected(Reason.SEGMENT_TOO_SHORT, detail=f"shot of {shot[1] - shot[0]:.2f} s")
        middle = (start + end) / 2
        start = min(max(shot[0], middle - need / 2), shot[1] - need)
        frames = config.min_frames
    end = start + (frames - 1) / fps
    return Kiss(
        start_s=start,
        end_s=end,
        num_frames=frames,
        contact_s=contact_s,
        contact_duration_s=contact_duration,
        min_distance=float(distance[closest]),
        tilt_deg=tilt,
        style=style,
        caption=caption_for(style),
    )
