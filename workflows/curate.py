"""`kissgen curate SOURCE DEST`: the Ray Data driver over kiss_core.curation (thin: list, map, write).

SOURCE and DEST are local directories or `s3://bucket/prefix` (S3 through the service's storage
settings, `KISS_STORAGE__*`). The clips stream through a pool of CPU actors, each holding the face
models once (`CurateWorker`); a worker writes the kept segments, their landmark tracks and a
thumbnail to DEST and returns manifest rows, which the driver streams into one Parquet file. A clip
whose content hash already has a kept/rejected row in DEST's manifest is not analysed again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiss_core.curation import manifest
from kiss_core.curation.config import CurateConfig
from kiss_core.curation.report import thumb_key, write_report
from kiss_core.curation.sources import (
    Entry,
    Location,
    Store,
    fetched,
    list_local,
    list_store,
    open_local,
    read_local_sidecar,
    read_store_sidecar,
)
from kiss_core.settings import Settings, StorageSettings

SKIPPED = "skipped"  # kind of a worker row that says "already in the manifest": replaced by the old rows


class CurateWorker:
    """A Ray Data actor: face models loaded once, then one clip at a time (batches of names)."""

    def __init__(self, source: str, dest: str, config_json: str, storage_json: str, done: list[str]):
        from kiss_core.curation.clip import FaceModels

        self.config = CurateConfig.model_validate_json(config_json)
        storage = StorageSettings.model_validate_json(storage_json)
        self.source = Location.parse(source)
        self.source_store = None if self.source.is_local else self.source.store(storage)
        self.dest = Location.parse(dest).store(storage)
        self.done = frozenset(done)
        self.models = FaceModels.load()
        import cv2

        cv2.setNumThreads(1)  # the actor holds one CPU: OpenCV's pool would compete with the other actors

    def __call__(self, batch: dict[str, Any]) -> Any:
        rows: list[dict[str, Any]] = []
        for name in batch["name"]:
            rows.extend(self.one(str(name)))
        return manifest.to_table(rows)

    def one(self, name: str) -> list[dict[str, Any]]:
        from kiss_core.curation.clip import curate_clip, file_sha256, rejected_row
        from kiss_core.curation.reasons import Reason

        try:
            with self._opened(name) as path:
                source_id = file_sha256(path)
                if done_key(source_id, name) in self.done:
                    return [
                        manifest.empty_row(kind=SKIPPED, source_id=source_id, source_path=name, decision="")
                    ]
                if self.source.root is not None:
                    sidecar = read_local_sidecar(self.source.root, name)
                else:
                    assert self.source_store is not None
                    sidecar = read_store_sidecar(self.source_store, name)
                result = curate_clip(path, sidecar, self.models, self.config, name, source_id)
        except PermissionError as exc:
            return [rejected_row(Entry(name).name_id, name, Reason.UNSAFE_PATH, error=str(exc))]
        except Exception as exc:  # a clip must never stop the run
            row = rejected_row(Entry(name).name_id, name, error=f"{type(exc).__name__}: {exc}"[:500])
            row["decision"] = manifest.FAILED
            return [row]
        for segment in result.segments:
            self.dest.put(segment.row["clip"], segment.exported.mp4, "video/mp4")
            self.dest.put(segment.row["tracks"], segment.exported.tracks_npz, "application/octet-stream")
        if result.thumbnail:
            self.dest.put(thumb_key(result.row["source_id"]), result.thumbnail, "image/jpeg")
        return [result.row, *(s.row for s in result.segments)]

    def _opened(self, name: str) -> contextlib.AbstractContextManager[Path]:
        """A local path for the clip: the file itself (checked again), or the S3 object in a temp file."""
        if self.source.root is not None:
            return contextlib.nullcontext(open_local(self.source.root, name))
        assert self.source_store is not None
        return fetched(self.source_store, name)


@dataclass
class Summary:
    clips: int
    kept: int
    rejected: int
    failed: int
    skipped: int
    segments: int
    seconds: float
    report: dict[str, Any]


def done_key(source_id: str, source_path: str) -> str:
    """What a rerun skips on: the content hash, with the path (the same bytes may come with another
    sidecar under another name, and be decided differently)."""
    return f"{source_id} {source_path}"


def _previous_rows(dest: Store) -> dict[str, list[dict[str, Any]]]:
    """done_key -> its rows in DEST's manifest, for clips decided before (failed ones are retried)."""
    if not dest.exists(manifest.MANIFEST_NAME):
        return {}
    previous: dict[str, list[dict[str, Any]]] = {}
    for row in manifest.read_rows(dest.get(manifest.MANIFEST_NAME)):
        previous.setdefault(done_key(row["source_id"], row["source_path"]), []).append(row)
    return {
        sid: rows
        for sid, rows in previous.items()
        if any(r["kind"] == manifest.KIND_SOURCE and r["decision"] != manifest.FAILED for r in rows)
    }


def _entries(source: Location, storage: StorageSettings, config: CurateConfig) -> Iterator[Entry]:
    if source.root is not None:
        if not source.root.is_dir():
            raise FileNotFoundError(f"SOURCE {source.url} is not a directory")
        return list_local(source.root, config.extensions)
    return list_store(source.store(storage), config.extensions)


def curate(
    source_url: str,
    dest_url: str,
    config: CurateConfig,
    storage: StorageSettings | None = None,
    workers: int | None = None,
) -> Summary:
    """Runs the pipeline on the Ray cluster this process is connected to."""
    import pyarrow.parquet as pq
    import ray

    from kiss_core.curation.clip import rejected_row

    started = time.perf_counter()
    storage = storage or Settings().storage
    source, dest_location = Location.parse(source_url), Location.parse(dest_url)
    dest = dest_location.store(storage)
    previous = _previous_rows(dest)

    rows: list[dict[str, Any]] = []  # small per clip; the Parquet file is streamed from the batches
    names: list[dict[str, str]] = []
    for entry in _entries(source, storage, config):
        if entry.refused is not None:
            rows.append(rejected_row(entry.name_id, entry.name, entry.refused))
        else:
            names.append({"name": entry.name})

    skipped = 0
    if names:
        workers = workers or max(1, int(ray.available_resources().get("CPU", 1)))
        items = ray.data.from_items(names, override_num_blocks=min(len(names), 4 * workers * 8))
        ds = items.map_batches(
            CurateWorker,
            fn_constructor_kwargs={
                "source": source_url,
                "dest": dest_url,
                "config_json": config.model_dump_json(),
                "storage_json": storage.model_dump_json(),
                "done": sorted(previous),
            },
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():  # type: ignore[union-attr]
                if row["kind"] == SKIPPED:
                    skipped += 1
                    rows.extend(previous.get(done_key(row["source_id"], row["source_path"]), []))
                else:
                    rows.append(row)

    rows.sort(key=lambda r: (r["source_path"], r["kind"] != manifest.KIND_SOURCE, r.get("segment_id") or ""))
    fd, tmp = tempfile.mkstemp(suffix=".parquet")
    os.close(fd)
    try:
        with pq.ParquetWriter(tmp, manifest.SCHEMA, compression="zstd") as writer:
            for start in range(0, len(rows), 10_000):
                writer.write_table(manifest.to_table(rows[start : start + 10_000]))
        dest.put(manifest.MANIFEST_NAME, Path(tmp).read_bytes(), "application/vnd.apache.parquet")
    finally:
        os.unlink(tmp)
    seconds = time.perf_counter() - started
    report = write_report(
        rows, dest, {"source": source_url, "seconds": round(seconds, 2), "skipped": skipped}
    )
    sources = [r for r in rows if r["kind"] == manifest.KIND_SOURCE]
    return Summary(
        clips=len(sources),
        kept=sum(r["decision"] == manifest.KEPT for r in sources),
        rejected=sum(r["decision"] == manifest.REJECTED for r in sources),
        failed=sum(r["decision"] == manifest.FAILED for r in sources),
        skipped=skipped,
        segments=sum(r["kind"] == manifest.KIND_SEGMENT for r in rows),
        seconds=seconds,
        report=report,
    )


def run(args: argparse.Namespace) -> int:
    """The subcommand: connect to Ray (or reuse the connection), curate, print one summary line."""
    import sys

    import pydantic

    try:  # what a user got wrong is one line on stderr and exit code 2, before Ray starts
        config = CurateConfig.from_yaml(args.config)
        for url in (args.source, args.dest):
            Location.parse(url)
        source = Location.parse(args.source)
        if source.root is not None and not source.root.is_dir():
            raise ValueError(f"SOURCE {args.source} is not a directory")
    except (OSError, ValueError, pydantic.ValidationError) as exc:
        print(f"kissgen curate: {exc}", file=sys.stderr)
        return 2
    import ray

    if not ray.is_initialized():
        ray.init(address=args.address)
    summary = curate(args.source, args.dest, config, workers=args.workers)
    print(
        f"curated {summary.clips} clips in {summary.seconds:.1f} s: {summary.kept} kept "
        f"({summary.segments} segments), {summary.rejected} rejected, {summary.failed} failed, "
        f"{summary.skipped} already done; manifest {args.dest.rstrip('/')}/{manifest.MANIFEST_NAME}"
    )
    print(json.dumps(summary.report["reasons"]))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers `kissgen curate SOURCE DEST [--config] [--address] [--workers]`."""
    p = sub.add_parser(
        "curate",
        help="curate raw kiss clips into a training set (Ray Data)",
        description="Raw clips (+ <name>.json sidecars) in SOURCE -> scored, trimmed, captioned clips, "
        "manifest.parquet and a report in DEST. SOURCE/DEST: a directory or s3://bucket/prefix.",
    )
    p.add_argument("source", help="directory or s3://bucket/prefix holding the clips and their sidecars")
    p.add_argument("dest", help="directory or s3://bucket/prefix for the dataset")
    p.add_argument("--config", default=None, help="YAML file of CurateConfig fields (docs/curation.md)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--workers", type=int, default=None, help="curation actors (default: one per CPU)")
    p.set_defaults(func=run)
