"""The quality report's face finding, step by step: HOG alone, plus MediaPipe's full-range detector,
plus each person looked for alone, on ONE core.

    .venv/bin/python bench/quality_detectors.py [--pairs 3] [--repeats 3] [--every-pair] [--out PATH]

The producer's whole preview job (832x480, 24 fps, 5 s) for each synthetic pair (composites, never a
real person) x style (the first `--pairs` of the studio's, as the thresholds test holds three; with
`--every-pair` all 12 ordered pairs of the 4 subjects: the order changes who stands left and who is
in front); on the frames the report checks (8 evenly spaced + the contact frame, with
HOG's detections the producer already made) each variant of the identity report is run:

- `hog`: HOG's faces, each counted for the nearest planned person (the report before b121cb4);
- `full_range`: HOG's faces plus the full-range detector's where HOG found none, near one planned
  person only (the report from b121cb4);
- `alone`: and where that still leaves someone without a face, each person looked for alone, the
  partner's side of the frame filled flat (`faces_alone`: what the report does now).

Per job and variant: each person's visible share, the share of checked frames where both are
found (and, of the checked frames where the plan shows at least `SHOWN` of each face uncovered by
the partner, the share where both are found: what a detector can be asked for), identity min/mean
(dlib descriptors throughout), how many faces found read more like the partner's photo than their
own (`confused`), and the identity report's CPU time (best of `--repeats`, process time: this
machine is shared, wall clocks are not). Per job also: how often one face pasted where the two meet
(both heads painted out, as if merged) is read as two people (`one_face_read_as_two`: read as two,
tried, on the frames where HOG lacks someone); per checked frame the least share of a face
the plan shows (`planned_shown`), the contact's seam (kiss_core.generation.quality.seam, as the
job's report gives it) and its CPU time, and the producer's whole report in CPU seconds: the
identity report as `alone` runs it (the producer runs it frame by frame beside the render) plus what
`_measure` does after the render (contact, seam, lighting). Prints one table and writes
bench/results/quality_detectors.json.
"""

from __future__ import annotations

import os

os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # before numpy/OpenCV start thread pools

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, ClassVar  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kiss_core.faces.embedding import cosine_similarity  # noqa: E402
from kiss_core.faces.synthetic import SUBJECT_COUNT  # noqa: E402
from kiss_core.generation.producer import VideoProducer, quality_sample  # noqa: E402
from kiss_core.generation.quality import identity_report  # noqa: E402
from kiss_core.generation.quality.faces import faces_alone  # noqa: E402
from kiss_core.generation.quality.identity import faces_seen  # noqa: E402
from kiss_core.generation.quality.seam import seam_ratio  # noqa: E402
from kiss_core.scene.choreography import KissPlan, face_centers  # noqa: E402
from kiss_core.scene.warp import PiecewiseAffineWarp  # noqa: E402
from kiss_core.schemas import VideoParams  # noqa: E402
from kiss_core.settings import Settings  # noqa: E402
from tests.support.frame_edits import one_face_at_the_contact  # noqa: E402
from tests.support.studio import PAIRS, SyntheticStudio  # noqa: E402

STYLES = ("peck", "romantic", "french", "cheek")
VARIANTS = {"hog": (False, False), "full_range": (True, False), "alone": (True, True)}  # turned, alone
SHOWN = 0.6  # a face counts as shown where the plan leaves at least this share of it uncovered


def planned_shown(plan: KissPlan, index: int) -> dict[str, float]:
    """Per person, the share of their face (the mesh of their 68 planned landmarks) that the partner's
    face does not cover in frame `index`, ordered per pixel by the plan's landmark depths as the
    compositor orders the heads. Backend-agnostic: only the plan is read."""
    size = (plan.width, plan.height)
    masks, depths = {}, {}
    for subject, track in plan.tracks.items():
        assert track.depth is not None
        mesh = PiecewiseAffineWarp(track.landmarks[0])
        points, depth = track.landmarks[index], track.depth[index]
        drawn = mesh.warp(np.full((plan.height, plan.width), 255, np.uint8), points, size, depths=depth)
        x, y = drawn.origin
        h, w = drawn.image.shape[:2]
        mask = np.zeros((plan.height, plan.width), bool)
        mask[y : y + h, x : x + w] = drawn.triangles > 0
        full = np.full((plan.height, plan.width), -np.inf, np.float32)
        full[y : y + h, x : x + w] = np.where(
            drawn.triangles > 0, mesh.interpolate(depth, points, drawn), -np.inf
        )
        masks[subject], depths[subject] = mask, full
    shown = {}
    for subject, other in (("a", "b"), ("b", "a")):
        covered = masks[subject] & masks[other] & (depths[other] > depths[subject])
        shown[subject] = 1.0 - float(covered.sum()) / max(1, int(masks[subject].sum()))
    return shown


class CapturingProducer(VideoProducer):
    """The producer, keeping what its report measured (frames, plan centres, HOG's faces) for the bench."""

    captured: ClassVar[dict[str, Any]] = {}

    def _measure(self, params, scene, rendered, conditioning, faces, identities):  # type: ignore[no-untyped-def]
        start = time.process_time()
        quality = super()._measure(params, scene, rendered, conditioning, faces, identities)
        after_render_cpu = time.process_time() - start
        plan = scene.plan
        indices = sorted(
            quality_sample(plan.frame_count, plan.contact_frame, self.settings.generator.quality_frames)
        )
        CapturingProducer.captured = {
            "frames": [rendered.sampled[i] for i in indices],
            "centres": {s: c[indices] for s, c in face_centers(plan).items()},
            "references": {s: conditioning.subjects[s].embedding for s in conditioning.subjects},
            "hog": [faces.detected(i, rendered.sampled[i]) for i in indices],
            "upsample": faces.upsample,
            "contact": rendered.contact,
            "planned": [track.landmarks[plan.contact_frame] for track in plan.tracks.values()],
            "landmarks": {s: t.landmarks[indices] for s, t in plan.tracks.items()},
            "shown": [planned_shown(plan, i) for i in indices],
            "after_render_cpu_s": after_render_cpu,
        }
        return quality


def seen_per_frame(captured: dict[str, Any], variant: str) -> list[dict[str, Any]]:
    """Per checked frame, subject -> (face, image) as the identity report counts them in `variant`."""
    turned, alone = VARIANTS[variant]
    seen = []
    for index, frame in enumerate(captured["frames"]):
        centres = {s: c[index] for s, c in captured["centres"].items()}
        planned = {s: marks[index] for s, marks in captured["landmarks"].items()} if alone else None
        seen.append(faces_seen(frame, captured["hog"][index], centres, planned, turned))
    return seen


def both_found(
    captured: dict[str, Any], seen: list[dict[str, Any]], only_shown: bool = False
) -> float | None:
    """Share of the checked frames in which both people are found; with `only_shown`, of those where
    the plan shows at least SHOWN of each face (None: no such frame)."""
    hits = checked = 0
    for index, faces in enumerate(seen):
        if only_shown and min(captured["shown"][index].values()) < SHOWN:
            continue
        checked += 1
        hits += len(faces) == 2
    return hits / checked if checked else None


def confused(studio: SyntheticStudio, captured: dict[str, Any], seen: list[dict[str, Any]]) -> int:
    """How many of the faces found read more like the partner's photo than their own."""
    references = captured["references"]
    count = 0
    for faces in seen:
        for subject, (face, image) in faces.items():
            partner = next(s for s in references if s != subject)
            embedding = studio.analyzer.embed(image, face.landmarks)
            own = cosine_similarity(embedding, references[subject])
            count += own < cosine_similarity(embedding, references[partner])
    return count


def one_face_read_as_two(captured: dict[str, Any]) -> list[int]:
    """[read as two people, tried]: on each checked frame where HOG lacks someone (the hold), both
    heads painted out and one of frame 0's faces pasted where the two meet, as if merged
    (tests/support/frame_edits.py); `faces_alone` should not find two people there."""
    first = captured["frames"][0]
    read_as_two = tried = 0
    for index, frame in enumerate(captured["frames"]):
        if len(captured["hog"][index]) >= 2:
            continue
        planned = {s: marks[index] for s, marks in captured["landmarks"].items()}
        for face in captured["hog"][0]:
            merged = one_face_at_the_contact(first, face, frame, planned)
            read_as_two += len(faces_alone(merged, planned)) == 2
            tried += 1
    return [read_as_two, tried]


def measure(studio: SyntheticStudio, captured: dict[str, Any], repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (turned, alone) in VARIANTS.items():
        best = float("inf")
        for _ in range(repeats):
            start = time.process_time()
            report = identity_report(
                captured["frames"],
                captured["centres"],
                captured["references"],
                studio.analyzer,
                0.92,
                upsample=captured["upsample"],
                detections=captured["hog"],
                turned_faces=turned,
                planned_landmarks=captured["landmarks"] if alone else None,
            )
            best = min(best, time.process_time() - start)
        seen = seen_per_frame(captured, name)
        out[name] = {
            "both_found": round(both_found(captured, seen) or 0.0, 3),
            "both_found_where_shown": _rounded(both_found(captured, seen, only_shown=True)),
            "visible": {q.subject: round(q.visible_share, 3) for q in report.subjects},
            "similarity_min": {q.subject: _rounded(q.similarity_min) for q in report.subjects},
            "similarity_mean": {q.subject: _rounded(q.similarity_mean) for q in report.subjects},
            "confused": confused(studio, captured, seen),
            "identity_s": round(best, 4),
        }
    seam_s = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        seam_ratio(captured["contact"], *captured["planned"])
        seam_s = min(seam_s, time.process_time() - start)
    out["seam_s"] = round(seam_s, 4)
    out["shown"] = [{s: round(v, 3) for s, v in shown.items()} for shown in captured["shown"]]
    out["both_shown"] = round(
        sum(min(v.values()) >= SHOWN for v in captured["shown"]) / len(captured["shown"]), 3
    )
    out["after_render_cpu_s"] = round(captured["after_render_cpu_s"], 4)
    out["one_face_read_as_two"] = one_face_read_as_two(captured)
    return out


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


HEADER = (
    f"{'pair':5} {'style':9} | both found: hog / full range / alone | alone: visible a/b, min a/b,"
    " mean a/b, confused | one face read as two | least shown per frame | seam | report CPU"
)


def _line(row: dict[str, Any]) -> str:
    both = " / ".join(f"{row[name]['both_found']:.2f}" for name in VARIANTS)
    v = row["alone"]
    lowest = " ".join(f"{min(shown.values()):.2f}" for shown in row["shown"])
    return (
        f"{row['pair']:5} {row['style']:9} | {both} | {v['visible']['a']:.2f}/{v['visible']['b']:.2f},"
        f" {v['similarity_min']['a']}/{v['similarity_min']['b']},"
        f" {v['similarity_mean']['a']}/{v['similarity_mean']['b']}, {v['confused']}"
        f" | {row['one_face_read_as_two'][0]}/{row['one_face_read_as_two'][1]} | {lowest}"
        f" | {row['seam']} | {row['after_render_cpu_s'] + v['identity_s']:.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pairs", type=int, default=3, help="how many of the studio's pairs (the thresholds test uses 3)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="identity report runs per variant; best kept")
    parser.add_argument(
        "--every-pair",
        action="store_true",
        help="every ordered pair of the synthetic subjects (12) instead of the first --pairs",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "quality_detectors.json"))
    args = parser.parse_args()
    pairs = (
        [(a, b) for a in range(SUBJECT_COUNT) for b in range(SUBJECT_COUNT) if a != b]
        if args.every_pair
        else PAIRS[: args.pairs]
    )
    settings = Settings()
    studio = SyntheticStudio(settings, tempfile.mkdtemp(prefix="quality_detectors_"))
    producer = CapturingProducer(settings, studio.store, studio.analyzer)
    studio.producer = producer
    rows = []
    print(HEADER, flush=True)
    for indices in pairs:
        pair = studio.pair(*indices)
        for style in STYLES:
            result = studio.produce(pair, VideoParams(style=style))
            contact = result.quality.contact
            row = {
                "pair": pair.name,
                "style": style,
                "timings": result.timings,
                "seam": None if contact is None or contact.seam is None else round(contact.seam, 3),
            }
            row.update(measure(studio, producer.captured, args.repeats))
            rows.append(row)
            print(_line(row), flush=True)
    path = Path(args.out)
    path.write_text(json.dumps({"machine": platform.platform(), "cores": 1, "rows": rows}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
