"""The curated dataset's manifest: the one place its column names and types are written down.

Curation writes `DEST/manifest.parquet`; training reads it with `read_segments`. Any folder of clips
with a manifest of this schema is a dataset (training must not rely on anything else curation writes).

Layout of DEST:
  manifest.parquet        one row per source clip (kind="source") and per kept segment (kind="segment")
  clips/<segment_id>.mp4  16 fps, 832x480 or 480x832, 4k+1 frames
  tracks/<segment_id>.npz landmarks float32 (F, 2, 68, 2) in the clip's pixels, person 0 = left;
                          valid bool (F, 2)
  report/                 report.json, histograms and contact sheet
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST_NAME = "manifest.parquet"
CLIPS_DIR = "clips"
TRACKS_DIR = "tracks"
REPORT_DIR = "report"

KIND_SOURCE = "source"
KIND_SEGMENT = "segment"
KEPT = "kept"
REJECTED = "rejected"
FAILED = "failed"
STYLES = ("peck", "romantic", "french", "cheek")

# Score columns: every one a float64, null when the clip never got that far. Kept in one tuple so a
# writer, a report and a reader agree on the set.
SCORE_COLUMNS: tuple[str, ...] = (
    "score_sharpness",  # variance of the Laplacian on the frame (median over sampled frames)
    "score_face_sharpness",  # same on the face boxes
    "score_exposure_clipped",  # share of pixels in clipped shadows/highlights (median)
    "score_blockiness",  # 8x8 block-edge energy over in-block energy (median)
    "score_face_width",  # the smaller face's width over frame width (median)
    "score_identity_min",  # lowest cosine similarity of a face to its track's median embedding
    "score_landmark_jitter",  # median landmark jitter over face width (high-pass, per frame)
    "score_landmark_share",  # share of sampled frames with both faces' landmarks usable
    "score_camera_motion",  # median global optical-flow magnitude, px per source frame at 832 wide
    "score_flicker",  # FlickerMeter's score on the sampled frames
    "score_min_mouth_distance",  # the kiss: lowest mouth distance over mean face width
    "score_contact_s",  # seconds the mouths stay in contact
    "score_head_tilt_deg",  # median absolute head roll during contact
)

SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("segment_id", pa.string()),
        pa.field("decision", pa.string(), nullable=False),
        pa.field("reasons", pa.list_(pa.string()), nullable=False),
        pa.field("error", pa.string()),
        pa.field("licence", pa.string()),
        pa.field("consent_refs", pa.list_(pa.string()), nullable=False),
        pa.field("origin", pa.string()),
        pa.field("clip", pa.string()),
        pa.field("tracks", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("style", pa.string()),
        pa.field("fps", pa.float64()),
        pa.field("width", pa.int64()),
        pa.field("height", pa.int64()),
        pa.field("num_frames", pa.int64()),
        pa.field("contact_frame", pa.int64()),
        pa.field("segment_start_s", pa.float64()),  # where the segment starts in the source clip
        pa.field("segment_end_s", pa.float64()),
        pa.field("shot_count", pa.int64()),  # shots left after dropping the short ones (source rows)
        pa.field("stage_seconds", pa.string()),  # JSON {stage: seconds} of the worker's time on the clip
        *[pa.field(name, pa.float64()) for name in SCORE_COLUMNS],
    ]
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)


def empty_row(**values: Any) -> dict[str, Any]:
    """A row with every column present (None / [] defaults), so writers never miss one."""
    row: dict[str, Any] = {name: None for name in COLUMNS}
    row["reasons"] = []
    row["consent_refs"] = []
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown manifest columns {sorted(unknown)}; known: {list(COLUMNS)}")
    row.update(values)
    return row


def to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts; missing columns are null) as a table of exactly SCHEMA."""
    full = [empty_row(**{k: v for k, v in r.items() if k in COLUMNS}) for r in rows]
    return pa.Table.from_pylist(full, schema=SCHEMA)


def manifest_bytes(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """The Parquet file for `rows`, as bytes: written through any ObjectStore with one put."""
    buf = io.BytesIO()
    pq.write_table(to_table(rows), buf, compression="zstd")
    return buf.getvalue()


def write_manifest(dest: Path | str, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Writes DEST/manifest.parquet atomically (temp file + rename) for a local DEST."""
    path = Path(dest) / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{MANIFEST_NAME}.tmp")
    tmp.write_bytes(manifest_bytes(rows))
    tmp.replace(path)
    return path


def read_table(source: Path | str | bytes) -> pa.Table:
    """The manifest as a table: from a DEST directory, a manifest path, or the file's bytes.

    Extra columns are kept; missing optional columns are added as nulls so older files still read."""
    if isinstance(source, bytes):
        table = pq.read_table(io.BytesIO(source))
    else:
        path = Path(source)
        table = pq.read_table(path / MANIFEST_NAME if path.is_dir() else path)
    for field in SCHEMA:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, type=field.type))
    return table


def read_rows(source: Path | str | bytes) -> list[dict[str, Any]]:
    return read_table(source).to_pylist()


@dataclass(frozen=True)
class Segment:
    """One kept training clip, as training sees it. Paths are relative to the dataset root."""

    segment_id: str
    source_id: str
    clip: str
    tracks: str | None
    caption: str
    style: str | None
    fps: float
    width: int
    height: int
    num_frames: int
    contact_frame: int | None
    licence: str | None
    consent_refs: tuple[str, ...]
    scores: Mapping[str, float | None]

    def clip_path(self, root: Path | str) -> Path:
        return Path(root) / self.clip

    def tracks_path(self, root: Path | str) -> Path | None:
        return None if self.tracks is None else Path(root) / self.tracks


def segments_from_rows(rows: Sequence[Mapping[str, Any]]) -> list[Segment]:
    """Kept segment rows as Segments, ordered by segment_id (stable across reruns)."""
    out: list[Segment] = []
    for r in rows:
        if r.get("kind") != KIND_SEGMENT or r.get("decision") != KEPT or not r.get("clip"):
            continue
        out.append(
            Segment(
                segment_id=str(r["segment_id"]),
                source_id=str(r["source_id"]),
                clip=str(r["clip"]),
                tracks=r.get("tracks"),
                caption=str(r.get("caption") or ""),
                style=r.get("style"),
                fps=float(r["fps"]),
                width=int(r["width"]),
                height=int(r["height"]),
                num_frames=int(r["num_frames"]),
                contact_frame=None if r.get("contact_frame") is None else int(r["contact_frame"]),
                licence=r.get("licence"),
                consent_refs=tuple(r.get("consent_refs") or ()),
                scores={k: r.get(k) for k in SCORE_COLUMNS},
            )
        )
    out.sort(key=lambda s: s.segment_id)
    return out


def read_segments(dest: Path | str) -> list[Segment]:
    """The kept segments of a local dataset directory (kind == "segment" and decision == "kept")."""
    return segments_from_rows(read_rows(dest))
