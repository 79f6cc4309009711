"""The motion plan: approach, head tilt, contact at the lips, hold, separation — per frame, deterministic.

Every subject's motion is a frame-space similarity applied after the layout transform: a rotation
(head tilt) and a small scale (leaning in) about the subject's own mouth centre, then a shift.
Because the pivot is the mouth, the tilt never moves the lips, and the shift alone decides where
the lips meet, so contact is exact by construction. All curves are eased (smoothstep), so motion
starts and stops with zero velocity and no frame jumps. The landmark tracks are the pose
guidance a video model consumes; the transforms drive the preview compositor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from kiss_core.compose import SceneLayout, frame_landmarks, layout_scene
from kiss_core.geometry import MOUTH, compose_affine
from kiss_core.schemas import SubjectAnalysis, VideoParams

PHASES = ("approach", "tilt", "contact", "hold", "separation")


@dataclass(frozen=True)
class StyleSpec:
    """Timing (fractions of the clip, before intensity) and amplitudes of one kiss style."""

    approach: float
    tilt: float
    contact: float
    hold: float  # at intensity 0.5; intensity scales it by 0.8..1.2
    tilt_deg: float  # at intensity 1; intensity 0 keeps 60 %
    rock_deg: float  # slow rocking of the heads during the hold, at intensity 1
    lean: float  # scale gained by leaning in, at intensity 1
    retreat: float  # share of the approach undone by the separation
    cheek: bool = False


STYLES: dict[str, StyleSpec] = {
    "peck": StyleSpec(0.40, 0.12, 0.08, 0.10, tilt_deg=6, rock_deg=0, lean=0.02, retreat=0.6),
    "romantic": StyleSpec(0.30, 0.12, 0.08, 0.28, tilt_deg=14, rock_deg=1.5, lean=0.04, retreat=0.45),
    "french": StyleSpec(0.26, 0.12, 0.08, 0.34, tilt_deg=18, rock_deg=3.0, lean=0.05, retreat=0.4),
    "cheek": StyleSpec(0.35, 0.10, 0.08, 0.17, tilt_deg=4, rock_deg=0, lean=0.02, retreat=0.6, cheek=True),
}

# Cheek landmarks on the image-left side of a face (iBUG): jaw, nose wing, mouth corner, lower eyelid.
# The image-right side is the mirror partner of each.
_CHEEK_LEFT = np.array([2, 3, 31, 48, 41])
_CHEEK_RIGHT = np.array([14, 13, 35, 54, 46])


@dataclass(frozen=True)
class SubjectTrack:
    """One subject over the clip: photo->frame affine per frame and its landmarks in frame pixels."""

    transforms: np.ndarray  # (T, 2, 3)
    landmarks: np.ndarray  # (T, 68, 2), iBUG order
    mirrored: bool


@dataclass(frozen=True)
class KissPlan:
    width: int
    height: int
    fps: int
    frame_count: int
    contact_frame: int
    phases: dict[str, tuple[int, int]]  # name -> [start, end) frames, in PHASES order, covering the clip
    tracks: dict[str, SubjectTrack]
    front: np.ndarray  # (T,) 0: a drawn on top, 1: b drawn on top
    layout: SceneLayout
    style: str = "romantic"

    def mouth_centers(self) -> dict[str, np.ndarray]:
        """(T, 2) mouth centre (mean of landmarks 48-67) per subject."""
        return {s: t.landmarks[:, MOUTH].mean(axis=1) for s, t in self.tracks.items()}


def smoothstep(x: np.ndarray) -> np.ndarray:
    """Cubic ease in [0, 1] with zero slope at both ends."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _ramp(frames: np.ndarray, start: float, end: float) -> np.ndarray:
    """0 before `start`, 1 after `end`, eased in between (a step if the span is empty)."""
    if end <= start:
        return (frames >= end).astype(np.float64)
    return smoothstep((frames - start) / (end - start))


def phase_bounds(style: str, intensity: float, frame_count: int) -> dict[str, tuple[int, int]]:
    """Frame spans of the five phases. A longer hold (intensity) takes time from approach and separation."""
    spec = STYLES[style]
    hold = spec.hold * (0.8 + 0.4 * intensity)
    rest = 1.0 - spec.approach - spec.tilt - spec.contact - spec.hold
    squeeze = (1.0 - spec.tilt - spec.contact - hold) / (spec.approach + rest)
    fractions = [spec.approach * squeeze, spec.tilt, spec.contact, hold]
    edges = [0]
    for f in fractions:
        edges.append(round(edges[-1] + f * frame_count) if frame_count > 1 else 0)
    edges.append(frame_count)
    # Contact needs a frame of approach before it and a frame to show it on.
    contact = min(max(edges[3], 1), frame_count - 1) if frame_count > 1 else 0
    edges[3] = contact
    edges = [min(max(e, 0), frame_count) for e in edges]
    for i in range(1, len(edges)):
        edges[i] = max(edges[i], edges[i - 1])
    edges[1] = min(edges[1], edges[3])
    edges[2] = min(max(edges[2], edges[1]), edges[3])
    return {name: (edges[i], edges[i + 1]) for i, name in enumerate(PHASES)}


def _rotation_about(pivots: np.ndarray, angles_deg: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """(T, 2, 3) rotation + scale about a fixed point per frame (positive angle = clockwise on screen)."""
    theta = np.deg2rad(angles_deg)
    c, s = np.cos(theta) * scales, np.sin(theta) * scales
    linear = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (T, 2, 2)
    shift = pivots - (linear @ pivots[..., None])[..., 0]
    return np.concatenate([linear, shift[..., None]], axis=-1)


def plan_kiss(analyses: Mapping[str, SubjectAnalysis], params: VideoParams) -> KissPlan:
    """A deterministic plan for `params` (style, intensity, length, size, fps); seed-independent."""
    if params.style not in STYLES:
        raise ValueError(f"`style` must be one of {sorted(STYLES)} but is {params.style!r}")
    spec = STYLES[params.style]
    intensity = float(params.intensity)
    width, height, count = params.width, params.height, params.frame_count
    layout = layout_scene(analyses, width, height)
    phases = phase_bounds(params.style, intensity, count)
    contact = phases["hold"][0]
    frames = np.arange(count, dtype=np.float64)

    # Shared curves. Approach eases over the whole approach/tilt/contact span and lands on the contact frame.
    approach = _ramp(frames, 0, contact) * (
        1 - _ramp(frames, phases["separation"][0], count - 1) * spec.retreat
    )
    tilt_in = _ramp(frames, phases["tilt"][0], contact)
    tilt_out = _ramp(frames, phases["separation"][0], count - 1)
    tilt_deg = spec.tilt_deg * (0.6 + 0.4 * intensity) * tilt_in * (1 - 0.6 * tilt_out)
    hold_start, hold_end = phases["hold"]
    rock = np.zeros(count)
    if spec.rock_deg and hold_end - hold_start > 2:
        u = np.clip((frames - hold_start) / (hold_end - hold_start), 0, 1)
        cycles = max(1, round((hold_end - hold_start) / params.fps / 1.5))  # one sway per ~1.5 s
        rock = spec.rock_deg * intensity * np.sin(2 * np.pi * cycles * u) * np.sin(np.pi * u)
    lean = 1 + spec.lean * intensity * approach

    # Both heads tilt the same way on screen: facing each other, that is opposite sides, so noses pass.
    angles = {"a": tilt_deg + rock, "b": tilt_deg * 0.8 + rock}
    mouths0 = {s: layout.placements[s].landmarks[MOUTH].mean(axis=0) for s in ("a", "b")}
    moves = {s: _rotation_about(np.broadcast_to(mouths0[s], (count, 2)), angles[s], lean) for s in ("a", "b")}

    # Where a's mouth must be at contact: b's mouth, or b's near cheek (the image-left side of b).
    if spec.cheek:
        cheek0 = layout.placements["b"].landmarks[_CHEEK_LEFT].mean(axis=0)
        at_contact = moves["b"][contact]
        target_b = at_contact[:, :2] @ cheek0 + at_contact[:, 2]
        share_a = 0.7  # the one who kisses moves more
    else:
        target_b = mouths0["b"]
        share_a = 0.5
    gap = target_b - mouths0["a"]
    shifts = {"a": np.outer(approach, gap * share_a), "b": np.outer(approach, -gap * (1 - share_a))}

    tracks: dict[str, SubjectTrack] = {}
    for subject in ("a", "b"):
        placement = layout.placements[subject]
        motion = moves[subject].copy()
        motion[:, :, 2] += shifts[subject]
        transforms = compose_affine(motion, np.broadcast_to(placement.transform, (count, 2, 3)))
        photo_points = np.asarray(analyses[subject].landmarks, dtype=np.float64)
        landmarks = frame_landmarks(transforms, photo_points, placement.mirrored)
        tracks[subject] = SubjectTrack(
            transforms=transforms, landmarks=landmarks, mirrored=placement.mirrored
        )

    # The kisser's face covers the cheek; for the lips the more turned face (less in the way) goes in front.
    if spec.cheek:
        on_top = 0
    else:
        yaw_a, yaw_b = abs(analyses["a"].pose.yaw), abs(analyses["b"].pose.yaw)
        on_top = 0 if yaw_a > yaw_b else 1
    front = np.full(count, on_top, dtype=np.int8)
    return KissPlan(
        width=width,
        height=height,
        fps=params.fps,
        frame_count=count,
        contact_frame=contact,
        phases=phases,
        tracks=tracks,
        front=front,
        layout=layout,
        style=params.style,
    )


def face_centers(plan: KissPlan) -> dict[str, np.ndarray]:
    """(T, 2) centre of each subject's landmarks per frame (where the quality report looks for faces)."""
    return {s: track.landmarks.mean(axis=1) for s, track in plan.tracks.items()}
