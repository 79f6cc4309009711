"""What the output check adds to a 5 s preview job, on ONE core.

    .venv/bin/python bench/output_check.py [--repeats 3] [--pairs 2]

The producer's whole job (plan, lighting, render, marks, encode, quality report, store; no Ray, no
HTTP) on synthetic pairs at 832x480, 24 fps, 5 s (120 frames), run with `safety.output_check`
on (the default) and off, alternating so machine noise falls on both. Best of `--repeats` per pair and
setting. The producer times the face detection of the sampled frames apart (`faces`: work the
quality report did before anyway, now done once for both) from the check itself (`output_check`:
content filter on the 9 sampled frames, age estimate on their full faces). The added time is
best(output_check); a cross-check from the same per-stage timings, steadier than whole-job
differences on a shared machine (shown too): best(faces) + best(output_check) + best(quality, on)
- best(quality, off). Target: the added time <= 10 % of the job without the check.

The process pins itself to one CPU before numpy/OpenCV/onnxruntime start thread pools. Prints one table
and writes bench/results/output_check.json.
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

import cv2  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kiss_core.generation.producer import VideoProducer  # noqa: E402
from kiss_core.schemas import VideoParams  # noqa: E402
from kiss_core.settings import Settings  # noqa: E402
from tests.support.studio import PAIRS, SyntheticStudio  # noqa: E402

PARAMS = VideoParams(style="peck", seconds=5, fps=24, size="832x480")
TARGET_RATIO = 0.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=2, help=f"how many of the {len(PAIRS)} synthetic pairs")
    args = parser.parse_args()
    cv2.setNumThreads(1)

    on = Settings()
    off = Settings.model_validate({"safety": {"output_check": {"enabled": False}}})
    with tempfile.TemporaryDirectory() as root:
        studio = SyntheticStudio(on, root)
        producers = {
            True: studio.producer,
            False: VideoProducer(off, studio.store, studio.analyzer),
        }
        rows: list[dict[str, str | float]] = []
        for a, b in PAIRS[: args.pairs]:
            pair = studio.pair(a, b)
            best = {True: float("inf"), False: float("inf")}
            quality = {True: float("inf"), False: float("inf")}
            stage = detect = float("inf")
            for checked in (True, False):  # warm-up: caches, model sessions, the encoder
                studio.producer = producers[checked]
                studio.produce(pair, PARAMS)
            for _ in range(args.repeats):
                for checked in (False, True):
                    studio.producer = producers[checked]
                    start = time.perf_counter()
                    result = studio.produce(pair, PARAMS)
                    elapsed = time.perf_counter() - start
                    best[checked] = min(best[checked], elapsed)
                    quality[checked] = min(quality[checked], result.timings["quality"])
                    if checked:
                        stage = min(stage, result.timings["output_check"])
                        detect = min(detect, result.timings["faces"])
            if result.frames != 120:
                raise RuntimeError(
                    f"the job made {result.frames} frames, not 120: the wrong thing was measured"
                )
            added = stage
            cross_check = detect + stage + quality[True] - quality[False]
            rows.append(
                {
                    "pair": pair.name,
                    "job_without_check_s": round(best[False], 4),
                    "job_with_check_s": round(best[True], 4),
                    "faces_stage_s": round(detect, 4),
                    "quality_stage_saved_s": round(quality[False] - quality[True], 4),
                    "added_s": round(added, 4),
                    "ratio": round(added / best[False], 4),
                    "stage_sum_difference_s": round(cross_check, 4),
                    "job_difference_s": round(best[True] - best[False], 4),
                }
            )

    print(f"one core, 5 s preview job ({PARAMS.size}, {PARAMS.fps} fps, 120 frames), best of {args.repeats}")
    columns = ("pair", "job, no check", "job, check", "faces (moved)", "check: added", "ratio", "stage sums")
    print("  ".join(f"{c:>13}" if i else f"{c:<5}" for i, c in enumerate(columns)))
    for row in rows:
        values = [
            f"{row['job_without_check_s']:.2f} s",
            f"{row['job_with_check_s']:.2f} s",
            f"{row['faces_stage_s']:.3f} s",
            f"{row['added_s']:.3f} s",
            f"{float(row['ratio']):.1%}",
            f"{row['stage_sum_difference_s']:.3f} s",
        ]
        print("  ".join([f"{row['pair']:<5}", *(f"{v:>13}" for v in values)]))
    worst = max(float(row["ratio"]) for row in rows)
    verdict = "met" if worst <= TARGET_RATIO else "NOT met"
    print(f"target: added <= {TARGET_RATIO:.0%} of the job; worst {worst:.1%}: {verdict}")
    report = {
        "params": PARAMS.model_dump(),
        "frames": 120,
        "cores": 1,
        "repeats": args.repeats,
        "checked_frames": Settings().safety.output_check.frames + 1,
        "target_ratio": TARGET_RATIO,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "rows": rows,
    }
    out = ROOT / "bench" / "results" / "output_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
