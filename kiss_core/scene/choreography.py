"""The motion plan: approach, head turn and tilt, eyes closing, contact at the lips, hold, separation.

The plan is data, per frame and per subject: a similarity (head tilt and leaning in, pivoting on
the subject's own mouth, then a shift) plus four face parameters — `turn` (yaw towards the
partner, degrees), `eyelid` (0 open .. 1 closed), `pucker` (0 .. 1) and `press` (0 .. 1, the lips
flattened against the partner's at contact). The 68-point landmark tracks include all of them, so
they are the pose guidance a video model consumes, and the preview compositor warps each photo onto
them; each landmark also carries its depth towards the camera (kiss_core.scene.depth), by which the
compositor orders the two heads per pixel.

The head model is deliberately small. Each subject's landmarks are first put upright by the scene
layout (eyes level). Eyelids and pucker move points in that frontal frame; the turn then projects
every point onto a vertical cylinder around the head's axis (radius: half the jaw span) and
rotates it, with a monotone mapping that keeps the head's silhouette in place, so the inner face
slides towards the partner and the far cheek is foreshortened, never folded. Nose, lips and chin
stand off the cylinder a little (kiss_core.scene.depth.STANDOFF) and so move further. The same model
gives each point its depth: on the cylinder's surface, so the foreshortened far cheek also turns
away from the camera. Finally the similarity puts the head in the frame.

Contact is exact by construction: each subject's shift is a share of the remaining gap between
the two mouths (or a's mouth and b's near cheek), eased to the full gap at the contact frame and
kept there through the hold, whatever the turn and pucker do meanwhile. All curves are eased
(smoothstep), so motion starts and stops with zero velocity and no frame jumps. Deterministic and
seed-free.

Idle motion keeps any frame from looking frozen: a short lead-in (`KissPlan.lead_in`, 0.4 s) before
the approach starts, and all along, each person breathes (the head rises and stretches a little about
the neck, on a period of their own, part of `motion`, so contact stays exact) and blinks once before
the kiss closes the eyes (through the eyelid landmarks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from kiss_core.media.geometry import CHEEK_LEFT, MOUTH, apply_affine, compose_affine
from kiss_core.scene.camera import DEFAULT_PUSH_IN, push_in
from kiss_core.scene.depth import FRONT_OFFSET, cylinder_depth, standoff, turn_radians, turned_angles
from kiss_core.scene.layout import SceneLayout, layout_scene
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
    turn_deg: float  # yaw towards the partner at contact, at intensity 1; intensity 0 keeps 75 %
    pucker: float  # lips pursed at contact, at intensity 1; intensity 0 keeps 60 %
    sway_deg: float = 0.0  # turn swaying during the hold (opposite for the two), at intensity 1
    cheek: bool = False
    front_lead: float = FRONT_OFFSET  # head radii the front head's axis stands nearer the camera


STYLES: dict[str, StyleSpec] = {
    "peck": StyleSpec(
        0.40, 0.12, 0.08, 0.10, tilt_deg=6, rock_deg=0, lean=0.02, retreat=0.6, turn_deg=44, pucker=0.7
    ),
    "romantic": StyleSpec(
        0.30, 0.12, 0.08, 0.28, tilt_deg=14, rock_deg=1.5, lean=0.04, retreat=0.45, turn_deg=50, pucker=0.5
    ),
    "french": StyleSpec(
        0.26,
        0.12,
        0.08,
        0.34,
        tilt_deg=18,
        rock_deg=3.0,
        lean=0.05,
        retreat=0.4,
        turn_deg=52,
        pucker=0.35,
        sway_deg=5.0,
    ),
    "cheek": StyleSpec(
        0.35,
        0.10,
        0.08,
        0.17,
        tilt_deg=4,
        rock_deg=0,
        lean=0.02,
        retreat=0.6,
        turn_deg=30,
        pucker=0.6,
        cheek=True,
        # The offered cheek turns towards the camera: the kisser leads further, so their face covers
        # it as far as their lips rather than hiding behind it.
        front_lead=0.3,
    ),
}

# Eyelids: upper-lid points and the lower-lid points they close onto.
_UPPER_LID = np.array([37, 38, 43, 44])
_LOWER_LID = np.array([41, 40, 47, 46])
_LID_CLOSED = 1.0  # share of the lid opening that closes at eyelid 1

# Seconds of the eye and lip gestures around contact.
_EYES_CLOSE = (0.55, 0.08)  # start closing this long before contact, closed this long before it
_EYES_OPEN = (0.15, 0.6)  # start opening this long after separation starts, open after this long
_PUCKER_IN = (0.7, 0.05)
_PUCKER_OUT = (0.0, 0.5)
_PRESS_IN = (0.2, 0.0)  # the lips press from this long before contact, fully at it
_PRESS_OUT = (0.0, 0.3)  # ...and let go over this long once separation starts
_PRESS = 0.3  # share of the lips' height lost at full press, at intensity 1; intensity 0 keeps 60 %

# Idle motion, so that no frame looks frozen: each person breathes and blinks, on their own clock.
_BREATH_PERIOD = {"a": 3.7, "b": 4.3}  # seconds; different, so the two never breathe in step
_BREATH_PHASE = {"a": 0.6, "b": 2.1}  # radians at frame 0
_BREATH_LIFT = 0.018  # head rise at full inhale, in head radii (about 1.5 px at 832x480)
_BREATH_SCALE = 0.006  # vertical stretch of the head at full inhale, about the neck
_LEAD_IN = 0.4  # seconds of idle motion before the approach (at most a fifth of the way to contact)
_BLINK_AT = {"a": 0.35, "b": 0.8}  # seconds into the clip, moved earlier to finish before the kiss
_BLINK = (0.08, 0.03, 0.15)  # seconds closing, shut, opening (at least 1, 0 and 2 frames)


@dataclass(frozen=True)
class SubjectTrack:
    """One subject over the clip. Frame pixels; landmarks in iBUG order (index 0 on the image's left).

    `transforms` is the photo->frame map (layout, breathing, tilt, leaning in, shift) without the face
    deformations; `landmarks` include turn, eyelid, pucker and press. `follow` moves any other photo
    point (forehead, hair, a ring around the head) with the head: similarity and turn.

    `depth` is each landmark's distance towards the camera in frame pixels (kiss_core.scene.depth: on
    the turned head cylinder, nose and lips standing off it), measured from a plane shared by both
    subjects; `axis_depth` is where this head's turn axis lies on that scale (the front head's is
    nearer). `surface_depth` gives any other photo point's depth on the cylinder the same way.
    """

    transforms: np.ndarray  # (T, 2, 3) photo -> frame
    landmarks: np.ndarray  # (T, 68, 2)
    mirrored: bool
    turn: np.ndarray  # (T,) degrees of yaw towards the partner (negative: away)
    eyelid: np.ndarray  # (T,) 0 open .. 1 closed (the kiss and the idle blink)
    pucker: np.ndarray  # (T,) 0 .. 1
    toward: int  # +1: the partner is to the right (subject a), -1: to the left (b)
    layout_transform: np.ndarray  # (2, 3) photo -> upright layout frame (the mirror included)
    motion: np.ndarray  # (T, 2, 3) layout frame -> frame pixels
    head_center: np.ndarray  # (2,) the turn axis in the layout frame (x) and the face's middle (y)
    head_radius: float  # cylinder radius in layout pixels
    breath: np.ndarray | None = None  # (T,) -1 exhaled .. 1 inhaled (already in `motion`; a body may use it)
    press: np.ndarray | None = None  # (T,) 0 .. 1: the lips flattened against the partner's (in `landmarks`)
    depth: np.ndarray | None = None  # (T, 68) frame pixels towards the camera
    axis_depth: np.ndarray | None = None  # (T,) frame pixels towards the camera of the head's turn axis

    def seen_by(self, camera: np.ndarray) -> SubjectTrack:
        """The same track through a per-frame camera (T, 2, 3): frame-space maps, landmarks and depths."""
        zoom = _scales(camera)
        return replace(
            self,
            transforms=compose_affine(camera, self.transforms),
            landmarks=apply_affine(camera, self.landmarks),
            motion=compose_affine(camera, self.motion),
            depth=None if self.depth is None else self.depth * zoom[:, None],
            axis_depth=None if self.axis_depth is None else self.axis_depth * zoom,
        )

    def follow(self, photo_points: np.ndarray) -> np.ndarray:
        """(T, N, 2) frame positions of photo points (N, 2) moving rigidly with the head and its turn."""
        local = apply_affine(self.layout_transform, np.asarray(photo_points, dtype=np.float64))
        turned = turn_points(local, self.head_center, self.head_radius, self.turn * self.toward)
        return apply_affine(self.motion, turned)

    def surface_depth(self, photo_points: np.ndarray) -> np.ndarray:
        """(T, N) depth in frame pixels of photo points (N, 2) on the turned head cylinder (no stand-off).

        Points beyond the cylinder (hair beside the head, the ring around it) lie in the axis plane.
        """
        local = apply_affine(self.layout_transform, np.asarray(photo_points, dtype=np.float64))
        radii = cylinder_depth(local, self.head_center, self.head_radius, self.turn * self.toward)
        axis = np.zeros(len(self.turn)) if self.axis_depth is None else self.axis_depth
        return axis[:, None] + radii * (self.head_radius * _scales(self.motion))[:, None]


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
    background: str = "auto"  # the request's scene: auto, a, b or blur (kiss_core.scene.background)
    lead_in: int = 0  # frames of idle motion only (breathing, a blink) before the approach starts
    camera: np.ndarray | None = None  # (T, 2, 3) scene -> frame (kiss_core.scene.camera); None: still
    scene_tracks: dict[str, SubjectTrack] | None = None  # `tracks` before the camera, when it moves

    def scene(self) -> KissPlan:
        """The plan as the compositor draws it: tracks in scene pixels, before the camera.

        `tracks` are what the viewer sees (frame pixels, the camera included) — what the quality
        report, the pose video and every other reader want. A renderer draws the scene and then
        applies `camera` to the finished frame (the preview backend does), so it takes this view.
        """
        if self.camera is None or self.scene_tracks is None:
            return self
        return replace(self, tracks=self.scene_tracks, camera=None, scene_tracks=None)

    def mouth_centers(self) -> dict[str, np.ndarray]:
        """(T, 2) mouth centre (mean of landmarks 48-67) per subject."""
        return {s: t.landmarks[:, MOUTH].mean(axis=1) for s, t in self.tracks.items()}


def _scales(affines: np.ndarray) -> np.ndarray:
    """(T,) the scale (geometric mean) of each of (T, 2, 3) affines."""
    return np.sqrt(np.abs(np.linalg.det(np.asarray(affines)[:, :, :2])))


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
    """(T, 2, 3) rotation + scale about a point per frame (positive angle = clockwise on screen)."""
    theta = np.deg2rad(angles_deg)
    c, s = np.cos(theta) * scales, np.sin(theta) * scales
    linear = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (T, 2, 2)
    shift = pivots - (linear @ pivots[..., None])[..., 0]
    return np.concatenate([linear, shift[..., None]], axis=-1)


def turn_points(
    points: np.ndarray,
    center: np.ndarray,
    radius: float,
    turn_deg: np.ndarray | float,
    depth: np.ndarray | None = None,
) -> np.ndarray:
    """Points (N, 2) of an upright head turned about its vertical axis by `turn_deg` (+: to the right).

    Inside the cylinder (|x - cx| < radius) a point at angle phi goes to sin(phi + turn * cos(phi)):
    the middle of the face moves as on a rotating cylinder, the silhouette stays where it is, and
    the map is monotone for |turn| < 1 rad, so a warp over these points never folds. `depth`
    ((N,) or (T, N), in radii) adds the stand-off of nose and lips. Returns (T, N, 2) for T turns,
    or (N, 2) for a scalar turn.
    """
    points = np.asarray(points, dtype=np.float64)
    scalar = np.ndim(turn_deg) == 0
    theta = turn_radians(turn_deg)
    u = (points[:, 0] - center[0]) / radius  # (N,)
    inside = np.abs(u) < 1.0
    turned = np.sin(turned_angles(u, theta))  # (T, N)
    u_new = np.where(inside[None, :], turned, u[None, :])
    if depth is not None:
        u_new = u_new + np.asarray(depth, dtype=np.float64) * np.sin(theta)[:, None]
    out = np.empty((len(theta), *points.shape))
    out[..., 0] = center[0] + u_new * radius
    out[..., 1] = points[None, :, 1]
    return out[0] if scalar else out


def close_eyelids(points: np.ndarray, eyelid: np.ndarray) -> np.ndarray:
    """(T, 68, 2): upper-lid points 37, 38 / 43, 44 moved onto the lower lid (41, 40 / 47, 46) by `eyelid`."""
    points = np.broadcast_to(points, (len(eyelid), *points.shape[-2:])).copy()
    closing = (_LID_CLOSED * np.asarray(eyelid))[:, None, None]
    points[:, _UPPER_LID] += closing * (points[:, _LOWER_LID] - points[:, _UPPER_LID])
    return points


def purse_lips(points: np.ndarray, pucker: np.ndarray) -> np.ndarray:
    """(T, 68, 2) upright landmarks with the lips pursed: corners in, the lips closed together."""
    points = np.array(points, dtype=np.float64, copy=True)
    p = np.asarray(pucker, dtype=np.float64)[:, None]
    mouth_x = points[:, MOUTH, 0].mean(axis=1, keepdims=True)
    for index, share in (
        (48, 0.3),
        (54, 0.3),
        (49, 0.2),
        (53, 0.2),
        (59, 0.2),
        (55, 0.2),
        (60, 0.25),
        (64, 0.25),
        (50, 0.1),
        (52, 0.1),
        (58, 0.1),
        (56, 0.1),
    ):
        points[:, index, 0] += share * p[:, 0] * (mouth_x[:, 0] - points[:, index, 0])
    # Close the lips: inner upper and lower lip meet halfway, the outer lip lines follow them.
    close = np.minimum(1.0, 2.0 * p)[:, :, None] * 0.9
    upper, lower = np.array([61, 62, 63]), np.array([67, 66, 65])
    middle = (points[:, upper] + points[:, lower]) / 2
    down = close * (middle - points[:, upper])
    up = close * (middle - points[:, lower])
    points[:, upper] += down
    points[:, lower] += up
    points[:, [50, 51, 52]] += down
    points[:, [58, 57, 56]] += up
    points[:, [49, 53]] += down[:, [0, 2]] / 2
    points[:, [59, 55]] += up[:, [0, 2]] / 2
    return points


def press_lips(points: np.ndarray, press: np.ndarray) -> np.ndarray:
    """(T, 68, 2) upright landmarks with the lips flattened vertically towards the line where they meet.

    At contact the lips press against the partner's: each lip point's height above or below the
    meeting line (the inner lips' mean height) shrinks by `press` (a share, 0 .. 1), so the mouth's
    outline is flatter by that much while it touches.
    """
    points = np.array(points, dtype=np.float64, copy=True)
    line = points[:, 60:68, 1].mean(axis=1, keepdims=True)  # (T, 1)
    squash = 1.0 - np.asarray(press, dtype=np.float64)[:, None]
    points[:, MOUTH, 1] = line + (points[:, MOUTH, 1] - line) * squash
    return points


def _pulse(frames: np.ndarray, fps: int, rise_end: float, fall_start: float, rise, fall) -> np.ndarray:
    """0 -> 1 eased, ending `rise[1]` s before `rise_end`; 1 -> 0 from `fall[0]` s after `fall_start`."""
    up = _ramp(frames, rise_end - rise[0] * fps, rise_end - rise[1] * fps)
    down = _ramp(frames, fall_start + fall[0] * fps, fall_start + fall[1] * fps)
    return up * (1.0 - down)


def idle_lead_in(contact: int, fps: int) -> int:
    """Frames before the approach starts: `_LEAD_IN` seconds, at most a fifth of the way to contact."""
    return int(min(round(_LEAD_IN * fps), contact // 5))


def breathing(count: int, fps: int, subject: str) -> np.ndarray:
    """(T,) -1 .. 1: a slow sine on the subject's own period and phase (deterministic)."""
    seconds = np.arange(count, dtype=np.float64) / fps
    return np.sin(2 * np.pi * seconds / _BREATH_PERIOD[subject] + _BREATH_PHASE[subject])


def _breath_affine(breath: np.ndarray, radius: float, chin_y: float) -> np.ndarray:
    """(T, 2, 3) in the upright layout frame: the head rises and stretches a little about the neck."""
    pivot = chin_y + 0.5 * radius  # the base of the neck: it stays, the head above it moves
    scale = 1.0 + _BREATH_SCALE * breath
    out = np.zeros((len(breath), 2, 3))
    out[:, 0, 0] = 1.0
    out[:, 1, 1] = scale
    out[:, 1, 2] = pivot * (1.0 - scale) - _BREATH_LIFT * radius * breath
    return out


def blink(frames: np.ndarray, fps: int, subject: str, latest_end: float) -> np.ndarray:
    """(T,) 0 .. 1: one blink, shut on a whole frame, finished by frame `latest_end`; none if it cannot fit.

    Eyes shut on an exact frame, so every frame rate shows a closed eye; the blink moves earlier when
    the kiss's own eye closing would start before it ends, and is left out when it would start on
    frame 0 (the first frame keeps open eyes: it is the still a diffusion model starts from).
    """
    close, shut, reopen = (
        max(1, round(_BLINK[0] * fps)),
        max(0, round(_BLINK[1] * fps)),
        max(2, round(_BLINK[2] * fps)),
    )
    at = min(round(_BLINK_AT[subject] * fps), int(np.floor(latest_end)) - shut - reopen)
    if at - close < 1:
        return np.zeros(len(frames))
    return _ramp(frames, at - close, at) * (1.0 - _ramp(frames, at + shut, at + shut + reopen))


def plan_kiss(
    analyses: Mapping[str, SubjectAnalysis], params: VideoParams, camera_push_in: float = DEFAULT_PUSH_IN
) -> KissPlan:
    """A deterministic plan for `params` (style, intensity, length, size, fps); seed-independent.

    `camera_push_in` > 0 adds a camera moving in that much (0.08: 8 %) toward the contact point by
    the end of the hold (`KissPlan.camera`; `tracks` then include it, `KissPlan.scene()` does not).
    """
    if params.style not in STYLES:
        raise ValueError(f"`style` must be one of {sorted(STYLES)} but is {params.style!r}")
    spec = STYLES[params.style]
    intensity = float(params.intensity)
    width, height, count, fps = params.width, params.height, params.frame_count, params.fps
    layout = layout_scene(analyses, width, height)
    phases = phase_bounds(params.style, intensity, count)
    contact = phases["hold"][0]
    separation = phases["separation"][0]
    frames = np.arange(count, dtype=np.float64)

    # Shared curves. After a short idle lead-in, the approach eases over the rest of the approach/tilt/
    # contact span and lands on the contact frame.
    lead_in = idle_lead_in(contact, fps)
    leave = _ramp(frames, separation, count - 1)
    approach = _ramp(frames, lead_in, contact) * (1 - leave * spec.retreat)
    tilt_in = _ramp(frames, phases["tilt"][0], contact)
    tilt_deg = spec.tilt_deg * (0.6 + 0.4 * intensity) * tilt_in * (1 - 0.6 * leave)
    hold_start, hold_end = phases["hold"]
    rock = np.zeros(count)
    sway = np.zeros(count)
    if hold_end - hold_start > 2:
        u = np.clip((frames - hold_start) / (hold_end - hold_start), 0, 1)
        cycles = max(1, round((hold_end - hold_start) / fps / 1.5))  # one sway per ~1.5 s
        wave = np.sin(2 * np.pi * cycles * u) * np.sin(np.pi * u)
        rock = spec.rock_deg * intensity * wave
        sway = spec.sway_deg * intensity * wave
    lean = 1 + spec.lean * intensity * approach

    # Face gestures: turn in over the approach, eyes close just before contact and open once apart.
    turn_in = _ramp(frames, lead_in + 0.25 * (contact - lead_in), contact) * (1 - 0.7 * leave)
    turn_c = spec.turn_deg * (0.75 + 0.25 * intensity)
    eyelid = _pulse(frames, fps, contact, separation, _EYES_CLOSE, _EYES_OPEN)
    pucker = (
        spec.pucker
        * (0.6 + 0.4 * intensity)
        * _pulse(frames, fps, contact, separation, _PUCKER_IN, _PUCKER_OUT)
    )

    press = _PRESS * (0.6 + 0.4 * intensity) * _pulse(frames, fps, contact, separation, _PRESS_IN, _PRESS_OUT)

    toward = {"a": 1, "b": -1}
    angles = {"a": tilt_deg + rock, "b": tilt_deg * 0.8 + rock}
    if spec.cheek:  # a turns in to kiss; b turns away, offering the near cheek
        turns = {"a": turn_c * turn_in, "b": -0.5 * turn_c * turn_in}
        eyelids = {"a": eyelid, "b": 0.6 * eyelid}
        puckers = {"a": pucker, "b": np.zeros(count)}
        presses = {"a": press, "b": np.zeros(count)}  # a cheek does not flatten like lips
    else:
        turns = {"a": turn_c * turn_in + sway, "b": turn_c * turn_in - sway}
        eyelids = {"a": eyelid, "b": eyelid}
        puckers = {"a": pucker, "b": pucker}
        presses = {"a": press, "b": press}

    # Idle motion: a blink each before the kiss's eyes close, breathing all along.
    kiss_eyes_from = contact - _EYES_CLOSE[0] * fps
    eyelids = {s: np.maximum(eyelids[s], blink(frames, fps, s, kiss_eyes_from - 1)) for s in ("a", "b")}
    breaths = {s: breathing(count, fps, s) for s in ("a", "b")}

    local: dict[str, np.ndarray] = {}  # (T, 68, 2) deformed upright landmarks, layout frame
    relief: dict[str, np.ndarray] = {}  # (T, 68) depth off the axis plane, in head radii
    heads: dict[str, tuple[np.ndarray, float]] = {}
    breath_maps: dict[str, np.ndarray] = {}  # (T, 2, 3) layout -> layout, breathing
    for s in ("a", "b"):
        upright = layout.placements[s].landmarks
        center = np.array([(upright[0, 0] + upright[16, 0]) / 2, upright[27:36, 1].mean()])
        radius = 0.5 * float(np.hypot(*(upright[16] - upright[0])))
        heads[s] = (center, radius)
        breath_maps[s] = _breath_affine(breaths[s], radius, float(upright[8, 1]))
        points = press_lips(purse_lips(close_eyelids(upright, eyelids[s]), puckers[s]), presses[s])
        stand_off = standoff(puckers[s])
        turned = np.empty_like(points)
        relief[s] = np.empty((count, 68))
        for t in range(count):  # turn_points is vectorised over turns for one point set
            yaw = turns[s][t] * toward[s]
            turned[t] = turn_points(points[t], center, radius, yaw, stand_off[t])
            relief[s][t] = cylinder_depth(points[t], center, radius, yaw, stand_off[t])
        local[s] = turned

    breathed = {s: apply_affine(breath_maps[s], local[s]) for s in ("a", "b")}
    mouths = {s: breathed[s][:, MOUTH].mean(axis=1) for s in ("a", "b")}  # (T, 2) pivots
    rotations = {
        s: compose_affine(_rotation_about(mouths[s], angles[s], lean), breath_maps[s]) for s in ("a", "b")
    }

    # Where a's mouth must be at contact: b's mouth, or b's near cheek (the image-left side of b).
    if spec.cheek:
        cheek = local["b"][:, CHEEK_LEFT].mean(axis=1)
        target_b = apply_affine(rotations["b"], cheek[:, None, :])[:, 0]
        share_a = 0.7  # the one who kisses moves more
    else:
        target_b = mouths["b"]
        share_a = 0.5
    gap = target_b - mouths["a"]  # (T, 2), before any shift
    shifts = {"a": approach[:, None] * gap * share_a, "b": -approach[:, None] * gap * (1 - share_a)}

    # The kisser's face covers the cheek; for the lips the more turned face (less in the way) goes in front.
    if spec.cheek:
        on_top = 0
    else:
        yaw_a, yaw_b = abs(analyses["a"].pose.yaw), abs(analyses["b"].pose.yaw)
        on_top = 0 if yaw_a > yaw_b else 1
    front = np.full(count, on_top, dtype=np.int8)

    tracks: dict[str, SubjectTrack] = {}
    for s in ("a", "b"):
        placement = layout.placements[s]
        motion = rotations[s].copy()
        motion[:, :, 2] += shifts[s]
        transforms = compose_affine(motion, np.broadcast_to(placement.transform, (count, 2, 3)))
        center, radius = heads[s]
        pixels = radius * _scales(motion)  # frame pixels per head radius
        axis_depth = spec.front_lead * pixels * (front == "ab".index(s))
        tracks[s] = SubjectTrack(
            transforms=transforms,
            landmarks=apply_affine(motion, local[s]),
            mirrored=placement.mirrored,
            turn=turns[s],
            eyelid=eyelids[s],
            pucker=puckers[s],
            toward=toward[s],
            layout_transform=placement.transform,
            motion=motion,
            head_center=center,
            head_radius=radius,
            breath=breaths[s],
            press=presses[s],
            depth=axis_depth[:, None] + relief[s] * pixels[:, None],
            axis_depth=axis_depth,
        )
    camera = None
    scene_tracks = None
    if camera_push_in > 0:
        lips = (
            tracks["a"].landmarks[contact, MOUTH].mean(axis=0)
            + tracks["b"].landmarks[contact, MOUTH].mean(axis=0)
        ) / 2
        camera = push_in(count, width, height, 0, hold_end, lips, camera_push_in)
        scene_tracks = tracks
        tracks = {s: track.seen_by(camera) for s, track in tracks.items()}
    return KissPlan(
        width=width,
        height=height,
        fps=fps,
        frame_count=count,
        contact_frame=contact,
        phases=phases,
        tracks=tracks,
        front=front,
        layout=layout,
        style=params.style,
        background=params.background,
        lead_in=lead_in,
        camera=camera,
        scene_tracks=scene_tracks,
    )


def face_centers(plan: KissPlan) -> dict[str, np.ndarray]:
    """(T, 2) centre of each subject's landmarks per frame (where the quality report looks for faces)."""
    return {s: track.landmarks.mean(axis=1) for s, track in plan.tracks.items()}
