"""`curate_clip`: one source clip from sidecar to kept segments, every rejection with its reason code.

The order of the checks is the order of their cost, and each stage stops the clip: sidecar (no
decoding) → probe (header only) → one decode pass (cuts, motion, samples) → per shot: quality →
camera motion → faces, identity, landmarks → flicker → the kiss → export. A shot is analysed on
its own; a clip is kept when one of its shots holds a whole kiss. No Ray here: the Ray Data driver
(workflows/curate.py) calls this once per clip inside an actor that holds `FaceModels`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kiss_core.curation import manifest
from kiss_core.curation.config import CurateConfig
from kiss_core.curation.decode import Decoded, Sample, decode_sampled, probe
from kiss_core.curation.export import ExportedSegment, export_segment
from kiss_core.curation.faces import ShotFaces, shot_faces
from kiss_core.curation.kiss import Kiss, find_kiss
from kiss_core.curation.quality import detail_sharpness, exposure, gray
from kiss_core.curation.reasons import Reason, Rejected
from kiss_core.curation.sidecar import Sidecar, check_sidecar, parse_sidecar
from kiss_core.faces.analysis import DlibFaceAnalyzer
from kiss_core.faces.embedding import FaceEmbedder, identity_model
from kiss_core.generation.quality.flicker import FlickerMeter, static_mask_from_boxes
from kiss_core.media.video import make_thumbnail
from kiss_core.settings import FaceSettings

STAGES = ("sidecar", "probe", "decode", "quality", "faces", "kiss", "export")


@dataclass
class FaceModels:
    """The face stack a worker loads once: the service's dlib analyzer and its identity embedder."""

    analyzer: DlibFaceAnalyzer
    embedder: FaceEmbedder

    @classmethod
    def load(cls, settings: FaceSettings | None = None) -> FaceModels:
        settings = settings or FaceSettings()
        analyzer = DlibFaceAnalyzer(settings)
        return cls(analyzer, identity_model(settings).embedder or analyzer)


@dataclass
class SegmentOutput:
    row: dict[str, Any]
    exported: ExportedSegment


@dataclass
class ClipResult:
    row: dict[str, Any]  # the manifest's source row
    segments: list[SegmentOutput] = field(default_factory=list)
    thumbnail: bytes | None = None  # a small JPEG for the contact sheet
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def decision(self) -> str:
        return str(self.row["decision"])

    @property
    def reasons(self) -> list[str]:
        return list(self.row["reasons"])


@dataclass
class _Shot:
    start: int  # frame indices [start, end)
    end: int
    cut_before: bool
    cut_after: bool


class _Clock:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_shots(decoded: Decoded, config: CurateConfig) -> list[_Shot]:
    """Shots between cuts (histogram jumps), the ones shorter than `min_shot_s` dropped."""
    cuts = [i for i, d in enumerate(decoded.cut_distance) if i > 0 and d > config.cut_threshold]
    bounds = [0, *cuts, decoded.frame_count]
    shots = []
    for k in range(len(bounds) - 1):
        start, end = bounds[k], bounds[k + 1]
        length = float(decoded.times[end - 1] - decoded.times[start]) + 1.0 / decoded.fps
        if length >= config.min_shot_s:
            shots.append(_Shot(start, end, cut_before=k > 0, cut_after=k < len(bounds) - 2))
    return shots


def check_quality(samples: list[Sample], config: CurateConfig, scores: dict[str, float]) -> None:
    lumas = [gray(s.frame) for s in samples]
    scores["score_sharpness"] = float(np.median([detail_sharpness(g) for g in lumas]))
    lights = np.array([exposure(g) for g in lumas])
    highlights, shadows = (float(v) for v in np.median(lights, axis=0))
    scores["score_exposure_clipped"] = highlights + shadows
    scores["score_blockiness"] = float(np.median([s.blockiness for s in samples]))
    reasons = []
    if scores["score_blockiness"] > config.max_blockiness:
        reasons.append(Reason.BLOCKY)
    elif scores["score_sharpness"] < config.min_sharpness:  # blocking also flattens the Laplacian
        reasons.append(Reason.BLURRED)
    if highlights > config.max_highlights:
        reasons.append(Reason.OVER_EXPOSED)
    if shadows > config.max_shadows:
        reasons.append(Reason.UNDER_EXPOSED)
    if reasons:
        raise Rejected(*reasons)


def check_motion(decoded: Decoded, shot: _Shot, config: CurateConfig, scores: dict[str, float]) -> None:
    shifts = decoded.shift_px[shot.start + 1 : shot.end]
    value = float(np.percentile(shifts, 90)) if shifts.size else 0.0
    scores["score_camera_motion"] = value
    if value > config.max_camera_motion:
        raise Rejected(Reason.CAMERA_MOTION, detail=f"p90 shift {value:.2f} px/frame")


def check_flicker(
    samples: list[Sample], faces: ShotFaces, config: CurateConfig, scores: dict[str, float]
) -> None:
    shape = samples[0].frame.shape
    mask = static_mask_from_boxes(faces.boxes.reshape(-1, 4).tolist(), shape)
    meter = FlickerMeter(mask)
    for s in samples:
        meter.add(s.frame)
    value = meter.result().mean
    scores["score_flicker"] = value
    if value > config.max_flicker:
        raise Rejected(Reason.FLICKER, detail=f"mean {value:.2f}")


@dataclass
class _ShotOutcome:
    scores: dict[str, float]
    reasons: list[Reason]
    kiss: Kiss | None = None
    faces: ShotFaces | None = None
    samples: list[Sample] = field(default_factory=list)


def analyse_shot(
    decoded: Decoded, shot: _Shot, models: FaceModels, config: CurateConfig, clock: _Clock
) -> _ShotOutcome:
    scores: dict[str, float] = {}
    samples = [s for s in decoded.samples if shot.start <= s.index < shot.end]
    outcome = _ShotOutcome(scores, [], samples=samples)
    if len(samples) < 3:
        outcome.reasons = [Reason.SHOT_TOO_SHORT]
        return outcome
    try:
        with clock.stage("quality"):
            check_quality(samples, config, scores)
            check_motion(decoded, shot, config, scores)
        with clock.stage("faces"):
            faces = shot_faces(samples, models.analyzer, models.embedder, config, decoded.scale, scores)
            outcome.faces = faces
        with clock.stage("quality"):
            check_flicker(samples, faces, config, scores)
        with clock.stage("kiss"):
            times = np.array([s.time_s for s in samples])
            last = float(decoded.times[shot.end - 1]) + 1.0 / decoded.fps
            height, width = samples[0].frame.shape[:2]
            outcome.kiss = find_kiss(
                times,
                faces.landmarks,
                faces.valid,
                (float(decoded.times[shot.start]), last),
                (shot.cut_before, shot.cut_after),
                (width, height),
                config,
                scores,
            )
    except Rejected as rejected:
        outcome.reasons = rejected.reasons
    return outcome


def _base_row(
    source_id: str, source_path: str, sidecar: Sidecar | None, raw: dict[str, Any]
) -> dict[str, Any]:
    return manifest.empty_row(
        kind=manifest.KIND_SOURCE,
        source_id=source_id,
        source_path=source_path,
        decision=manifest.REJECTED,
        licence=sidecar.licence if sidecar else _str_or_none(raw.get("licence", raw.get("license"))),
        consent_refs=list(sidecar.consent_refs) if sidecar else [],
        origin=sidecar.origin if sidecar else _str_or_none(raw.get("origin")),
    )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def rejected_row(
    source_id: str, source_path: str, *reasons: Reason, error: str | None = None
) -> dict[str, Any]:
    """A source row rejected before the clip could even be opened (listing problems)."""
    row = _base_row(source_id, source_path, None, {})
    row["reasons"] = [str(r) for r in reasons]
    row["error"] = error
    return row


def curate_clip(
    path: Path,
    sidecar_bytes: bytes | None,
    models: FaceModels,
    config: CurateConfig,
    source_path: str | None = None,
    source_id: str | None = None,
) -> ClipResult:
    """Everything curation decides about one clip. Never raises: an unexpected error is `failed`."""
    clock = _Clock()
    source_path = source_path or path.name
    raw: dict[str, Any] = {}
    sidecar: Sidecar | None = None
    result = ClipResult(row=_base_row(source_id or "", source_path, None, raw), timings=clock.timings)
    try:
        with clock.stage("sidecar"):
            source_id = source_id or file_sha256(path)
            result.row["source_id"] = source_id
            try:
                raw, sidecar = parse_sidecar(sidecar_bytes)
            finally:
                result.row = _base_row(source_id, source_path, sidecar, raw)
            assert sidecar is not None
            check_sidecar(sidecar, config)
        with clock.stage("probe"):
            header = probe(path, config)
            result.row.update(fps=header.fps, width=header.width, height=header.height)
        with clock.stage("decode"):
            decoded = decode_sampled(path, header, config)
            result.row.update(fps=decoded.fps, num_frames=decoded.frame_count)
            shots = split_shots(decoded, config)
        result.row["shot_count"] = len(shots)
        if decoded.samples:
            middle = decoded.samples[len(decoded.samples) // 2].frame
            result.thumbnail = make_thumbnail(middle, 240)
        if not shots:
            raise Rejected(Reason.SHOT_TOO_SHORT)
        outcomes = [analyse_shot(decoded, shot, models, config, clock) for shot in shots]
        kept = [o for o in outcomes if o.kiss is not None]
        best = kept[0] if kept else max(outcomes, key=lambda o: len(o.samples))
        result.row.update(best.scores)
        if not kept:
            reasons = list(dict.fromkeys(r for o in outcomes for r in o.reasons))
            if Reason.JUMP_CUT in reasons and len(reasons) > 1:
                # The cut is the cause; what the fragments around it fail is a consequence.
                others = ", ".join(r for r in reasons if r != Reason.JUMP_CUT)
                raise Rejected(Reason.JUMP_CUT, detail=f"shots around the cut also: {others}")
            raise Rejected(*reasons)
        for outcome in kept:
            assert outcome.kiss is not None and outcome.faces is not None
            with clock.stage("export"):
                segment = _export(path, decoded, outcome, config)
            for key in ("source_id", "source_path", "licence", "consent_refs", "origin"):
                segment.row[key] = result.row[key]
            result.segments.append(segment)
            at = int(np.argmin([abs(s.time_s - outcome.kiss.contact_s) for s in outcome.samples]))
            result.thumbnail = make_thumbnail(outcome.samples[at].frame, 240)
        result.row["decision"] = manifest.KEPT
    except Rejected as rejected:
        result.row["decision"] = manifest.REJECTED
        result.row["reasons"] = [str(r) for r in rejected.reasons]
        result.row["error"] = rejected.detail or None
    except Exception as exc:  # a bug or a decoder crash on one clip must not stop the run
        result.row["decision"] = manifest.FAILED
        result.row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        result.segments = []
    result.row["stage_seconds"] = json.dumps({k: round(v, 4) for k, v in clock.timings.items()})
    return result


def _export(path: Path, decoded: Decoded, outcome: _ShotOutcome, config: CurateConfig) -> SegmentOutput:
    kiss, faces = outcome.kiss, outcome.faces
    assert kiss is not None and faces is not None
    times = np.array([s.time_s for s in outcome.samples])
    exported = export_segment(
        path,
        kiss,
        faces,
        times,
        (decoded.probe.width, decoded.probe.height),
        decoded.scale,
        config,
        decoded.frames,
        # Samples analysed at the source's size are RGB frames the export need not convert again.
        {s.index: s.frame for s in decoded.samples} if decoded.scale == 1.0 else None,
    )
    row = manifest.empty_row(
        kind=manifest.KIND_SEGMENT,
        segment_id=exported.segment_id,
        decision=manifest.KEPT,
        clip=f"{manifest.CLIPS_DIR}/{exported.segment_id}.mp4",
        tracks=f"{manifest.TRACKS_DIR}/{exported.segment_id}.npz",
        caption=kiss.caption,
        style=kiss.style,
        fps=float(config.out_fps),
        width=exported.width,
        height=exported.height,
        num_frames=exported.num_frames,
        contact_frame=exported.contact_frame,
        segment_start_s=kiss.start_s,
        segment_end_s=kiss.end_s,
        **outcome.scores,
    )
    return SegmentOutput(row, exported)
