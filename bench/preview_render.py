"""Preview render speed on ONE core: render, encode and both streamed, per style, against the 2 s target.

Also the same with the job's marks (watermark and label) as a job delivers it, and the ratio.

    .venv/bin/python bench/preview_render.py [--repeats 5] [--seconds 5] [--size 832x480] [--fps 24]

The process pins itself to one CPU (sched_setaffinity; OpenCV and x264 then use one thread) before
anything is imported that starts threads. Styles run interleaved, repeat by repeat, so machine
noise hits all of them alike. Synthetic subjects only. Prints one table and writes
bench/results/preview_render.json.
"""

from __future__ import annotations

import os

os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # before numpy/OpenCV start thread pools

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kiss_core.faces.analysis import DlibFaceAnalyzer  # noqa: E402
from kiss_core.faces.synthetic import synthetic_subject_png  # noqa: E402
from kiss_core.generation.provenance.marks import FrameMarks  # noqa: E402
from kiss_core.keys import new_job_id  # noqa: E402
from kiss_core.media.images import decode_image  # noqa: E402
from kiss_core.media.video import encode_mp4  # noqa: E402
from kiss_core.scene.choreography import plan_kiss  # noqa: E402
from kiss_core.scene.lighting import harmonize_photos  # noqa: E402
from kiss_core.scene.pose_video import render_pose_frames  # noqa: E402
from kiss_core.scene.render import PreviewCompositor  # noqa: E402
from kiss_core.schemas import VideoParams  # noqa: E402
from kiss_core.settings import Settings  # noqa: E402

TARGET_S = 2.0
STYLES = ("peck", "romantic", "french", "cheek")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", default="832x480")
    parser.add_argument("--fps", type=int, default=24)
    args = parser.parse_args()
    cv2.setNumThreads(1)

    settings = Settings()
    analyzer = DlibFaceAnalyzer(settings.faces)
    photos = {s: decode_image(synthetic_subject_png(i), settings.limits, s) for i, s in enumerate("ab")}
    analyses = {s: analyzer.analyze(photos[s], s) for s in "ab"}
    landmarks = {s: analyses[s].landmarks for s in "ab"}
    photos = harmonize_photos(photos, landmarks, settings.generator.lighting_strength)
    compositor = PreviewCompositor()
    gen = settings.generator

    plans = {
        style: plan_kiss(
            analyses, VideoParams(style=style, seconds=args.seconds, size=args.size, fps=args.fps)
        )
        for style in STYLES
    }
    samples: dict[str, dict[str, list[float]]] = {
        style: {"render": [], "encode": [], "render_encode": [], "marked": [], "pose_video": []}
        for style in STYLES
    }

    def marked_frames(plan):
        """The frames as a job delivers them: watermarked with a job id, then labelled."""
        marks = FrameMarks(settings.provenance, new_job_id(), plan.width, plan.height)
        for frame in compositor.render(plan, photos, analyses):
            marks.apply(frame)
            yield frame

    def clock(fn) -> tuple[float, object]:
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result

    for repeat in range(args.repeats + 1):  # the first round warms caches and is dropped
        for style, plan in plans.items():
            render_s, frames = clock(lambda plan=plan: list(compositor.render(plan, photos, analyses)))
            encode_s, _ = clock(lambda frames=frames: encode_mp4(frames, args.fps, gen.crf, gen.preset))
            both_s, _ = clock(
                lambda plan=plan: encode_mp4(
                    compositor.render(plan, photos, analyses), args.fps, gen.crf, gen.preset
                )
            )
            marked_s, _ = clock(
                lambda plan=plan: encode_mp4(marked_frames(plan), args.fps, gen.crf, gen.preset)
            )
            pose_s, _ = clock(
                lambda plan=plan: encode_mp4(render_pose_frames(plan), args.fps, gen.crf, gen.preset)
            )
            if repeat:
                for name, value in (
                    ("render", render_s),
                    ("encode", encode_s),
                    ("render_encode", both_s),
                    ("marked", marked_s),
                    ("pose_video", pose_s),
                ):
                    samples[style][name].append(value)

    medians = {style: {k: statistics.median(v) for k, v in s.items()} for style, s in samples.items()}
    frames = next(iter(plans.values())).frame_count
    print(f"one core, {frames} frames {args.size} @ {args.fps} fps, median of {args.repeats}")
    print(
        f"{'style':<9} {'render':>8} {'encode':>8} {'both':>8} {'fps':>6} {'vs 2 s':>7} {'+marks':>8} "
        f"{'marks %':>7} {'pose mp4':>9}"
    )
    for style, m in medians.items():
        print(
            f"{style:<9} {m['render']:>7.3f}s {m['encode']:>7.3f}s {m['render_encode']:>7.3f}s "
            f"{frames / m['render_encode']:>6.1f} {m['render_encode'] / TARGET_S:>7.2f} "
            f"{m['marked']:>7.3f}s {m['marked'] / m['render_encode'] - 1:>+7.1%} {m['pose_video']:>8.3f}s"
        )
    report = {
        "params": {"seconds": args.seconds, "size": args.size, "fps": args.fps, "frames": frames},
        "cores": 1,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "target_s": TARGET_S,
        "median_s": medians,
        "samples_s": samples,
    }
    out = ROOT / "bench" / "results" / "preview_render.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
