"""Small components on ONE core against their budgets: the job's marks per frame, the synthetic subjects.

    .venv/bin/python bench/component_costs.py [--repeats 5]

Budgets (measured here, never asserted in tests, where machine load would make them flaky):
- watermark embed, amortised over 12 frames (every 12th frame also measures the picture and rebuilds
  the pattern): 3 ms a frame, so a 120-frame preview carries its marks well inside the 2 s target;
- watermark extract from one frame: 20 ms;
- visible label: 0.5 ms a frame at 832x480 ("well under 1 ms");
- all synthetic subjects from cold caches (source detection included): 5 s, the set-up of the tests
  and of `kissgen demo-subjects`.

Frames are the face-free moving clip of the tests (tests.support.clips). The process pins itself to one
CPU before numpy/OpenCV start thread pools. Best of `--repeats` rounds (the least disturbed); prints
one table and writes bench/results/component_costs.json.
"""

from __future__ import annotations

import os

os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # before numpy/OpenCV start thread pools

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kiss_core.faces import synthetic  # noqa: E402
from kiss_core.generation.provenance.label import FrameLabeler  # noqa: E402
from kiss_core.generation.provenance.watermark import WatermarkEmbedder, extract_job_id  # noqa: E402
from kiss_core.settings import LabelSettings  # noqa: E402
from tests.support.clips import moving_clip  # noqa: E402

JOB = "video_5f1c0a9e2b7d4c3a8e6f0b1d"
WIDTH, HEIGHT = 832, 480
BUDGETS_S = {
    "watermark_embed_per_frame": 3e-3,
    "watermark_extract_per_frame": 20e-3,
    "label_per_frame": 0.5e-3,
    "synthetic_subjects_cold": 5.0,
}


def best_of(repeats: int, fn: Callable[[], float]) -> float:
    """The smallest of `repeats` measurements, each returned by `fn` in seconds."""
    return min(fn() for _ in range(repeats))


def per_frame(fn: Callable[[], object], frames: int) -> Callable[[], float]:
    """A measurement of `fn` (which handles `frames` frames) in seconds per frame."""

    def measure() -> float:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) / frames

    return measure


def synthetic_subjects_cold() -> float:
    """Seconds to build every synthetic subject with the source faces detected again (the dlib models
    stay loaded: they are loaded once per process anyway)."""
    synthetic.source_faces.cache_clear()
    synthetic._subject.cache_clear()  # the per-subject cache behind synthetic_subject()
    start = time.perf_counter()
    for index in range(synthetic.SUBJECT_COUNT):
        synthetic.synthetic_subject(index)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cv2.setNumThreads(1)

    clip = moving_clip(12, WIDTH, HEIGHT)
    embedder = WatermarkEmbedder(JOB)
    embedder.apply(clip[0].copy())  # builds the pattern once per job
    marked = [frame.copy() for frame in clip]
    labeler = FrameLabeler(LabelSettings(), WIDTH, HEIGHT)
    label_frame = clip[0].copy()

    def embed_all() -> None:
        for frame in marked:
            embedder.apply(frame)

    def label_50() -> None:
        for _ in range(50):
            labeler.apply(label_frame)

    embed_all()  # the frames carry the mark before it is read back
    measured = {
        "watermark_embed_per_frame": best_of(args.repeats, per_frame(embed_all, len(marked))),
        "watermark_extract_per_frame": best_of(args.repeats, per_frame(lambda: extract_job_id(marked[0]), 1)),
        "label_per_frame": best_of(args.repeats, per_frame(label_50, 50)),
        "synthetic_subjects_cold": best_of(args.repeats, synthetic_subjects_cold),
    }
    if extract_job_id(marked[0]) != JOB:
        raise RuntimeError("the watermark did not read back: the timings measured the wrong thing")

    print(f"one core, {WIDTH}x{HEIGHT} frames, best of {args.repeats}")
    width = max(len(name) for name in measured)
    print(f"{'measure':<{width}}  {'best':>10}  {'budget':>10}  within")
    for name, value in measured.items():
        budget = BUDGETS_S[name]
        within = "yes" if value <= budget else "NO"
        print(f"{name:<{width}}  {_shown(value):>10}  {_shown(budget):>10}  {within}")
    report = {
        "frame_size": [WIDTH, HEIGHT],
        "cores": 1,
        "repeats": args.repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "budgets_s": BUDGETS_S,
        "best_s": measured,
    }
    out = ROOT / "bench" / "results" / "component_costs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


def _shown(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.2f} s"


if __name__ == "__main__":
    main()
