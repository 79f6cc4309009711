"""Preview render speed on ONE core: render, encode and both streamed, per style, against the 2 s target.

Also the same with the job's marks (watermark and label) as a job delivers it, and the ratio; the
once-per-job scene preparation (segmentation of both photos, the inpainted backdrop) on its own;
and, with `--baseline REF`, the renderer of that git commit side by side in the same process
(its kiss_core/scene/render.py loaded over today's other modules), so a busy machine slows both
alike: compare the ratio, not the absolute numbers. Times are wall clock and, in brackets, this
process's CPU time (which another engineer's load on the core does not inflate).

    .venv/bin/python bench/preview_render.py [--repeats 5] [--seconds 5] [--size 832x480] [--fps 24]
        [--baseline REF]

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
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kiss_core.faces.analysis import DlibFaceAnalyzer  # noqa: E402
from kiss_core.faces.synthetic import synthetic_subject_png  # noqa: E402
from kiss_core.generation.backends.preview import PreviewFrames  # noqa: E402
from kiss_core.generation.conditioning import Conditioning  # noqa: E402
from kiss_core.generation.provenance.marks import FrameMarks  # noqa: E402
from kiss_core.keys import new_job_id  # noqa: E402
from kiss_core.media.images import decode_image  # noqa: E402
from kiss_core.media.video import encode_mp4  # noqa: E402
from kiss_core.scene.background import choose_background, scene_background  # noqa: E402
from kiss_core.scene.choreography import KissPlan, plan_kiss  # noqa: E402
from kiss_core.scene.lighting import harmonize_photos  # noqa: E402
from kiss_core.scene.pose_video import render_pose_frames  # noqa: E402
from kiss_core.scene.render import PreviewCompositor  # noqa: E402
from kiss_core.scene.segmentation import segment_person  # noqa: E402
from kiss_core.schemas import VideoParams  # noqa: E402
from kiss_core.settings import Settings  # noqa: E402

TARGET_S = 2.0
SCENE_TARGET_S = 0.5  # segmentation + inpainting, both photos
STYLES = ("peck", "romantic", "french", "cheek")


class JobRenderer:
    """What a job renders with: the preview backend, i.e. the compositor drawing the scene and then,
    when the plan moves the camera (on by default), the camera's crop-and-resize of each frame."""

    def __init__(self, compositor: Any):
        self.compositor = compositor
        self.backend = PreviewFrames(compositor)

    def render(self, plan: KissPlan, photos: Any, analyses: Any) -> Iterator[np.ndarray]:
        return self.backend.frames(plan, photos, analyses, Conditioning(), VideoParams(), lambda _s: None)

    def scene(self, plan: KissPlan, photos: Any, analyses: Any) -> Any:
        return self.compositor.scene(plan, photos, analyses)


def baseline_compositor(ref: str):
    """The PreviewCompositor of git commit `ref` (its render.py only, over today's other modules)."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:kiss_core/scene/render.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType("baseline_render")
    module.__file__ = f"{ref}:kiss_core/scene/render.py"
    sys.modules[module.__name__] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module.PreviewCompositor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", default="832x480")
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--baseline", help="a git commit whose renderer runs side by side (e.g. HEAD~3)")
    args = parser.parse_args()
    cv2.setNumThreads(1)

    settings = Settings()
    analyzer = DlibFaceAnalyzer(settings.faces)
    photos = {s: decode_image(synthetic_subject_png(i), settings.limits, s) for i, s in enumerate("ab")}
    analyses = {s: analyzer.analyze(photos[s], s) for s in "ab"}
    landmarks = {s: analyses[s].landmarks for s in "ab"}
    photos = harmonize_photos(photos, landmarks, settings.generator.lighting_strength)
    compositor = JobRenderer(PreviewCompositor())
    baseline = JobRenderer(baseline_compositor(args.baseline)) if args.baseline else None
    gen = settings.generator

    plans = {
        style: plan_kiss(
            analyses,
            VideoParams(style=style, seconds=args.seconds, size=args.size, fps=args.fps),
            gen.camera_push_in,
        )
        for style in STYLES
    }
    names = ["render", "encode", "render_encode", "marked", "pose_video"]
    if baseline is not None:
        names += ["baseline_render_encode", "baseline_marked"]
    samples: dict[str, dict[str, list[float]]] = {style: {n: [] for n in names} for style in STYLES}
    cpu: dict[str, dict[str, list[float]]] = {style: {n: [] for n in names} for style in STYLES}
    scene_names = ("segmentation", "backdrop", "scene")
    scene_samples: dict[str, list[float]] = {n: [] for n in scene_names}
    scene_cpu: dict[str, list[float]] = {n: [] for n in scene_names}

    def marked_frames(plan, renderer=compositor):
        """The frames as a job delivers them: watermarked with a job id, then labelled."""
        marks = FrameMarks(settings.provenance, new_job_id(), plan.width, plan.height)
        for frame in renderer.render(plan, photos, analyses):
            marks.apply(frame)
            yield frame

    def clock(fn) -> tuple[float, float, object]:
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        return time.perf_counter() - start, time.process_time() - start_cpu, result

    def prepare_scene(plan) -> None:
        """Segmentation of both photos, then the backdrop (auto: inpainted photo), timed apart."""
        wall, cpu_s, segmentations = clock(
            lambda: {s: segment_person(photos[s], np.asarray(analyses[s].landmarks)) for s in "ab"}
        )
        scene_samples["segmentation"].append(wall)
        scene_cpu["segmentation"].append(cpu_s)
        wall, cpu_s, _ = clock(
            lambda: scene_background(
                choose_background("auto", segmentations), photos, segmentations, plan.layout
            )
        )
        scene_samples["backdrop"].append(wall)
        scene_cpu["backdrop"].append(cpu_s)
        wall, cpu_s, _ = clock(lambda: compositor.scene(plan, photos, analyses))
        scene_samples["scene"].append(wall)
        scene_cpu["scene"].append(cpu_s)

    for repeat in range(args.repeats + 1):  # the first round warms caches and is dropped
        for style, plan in plans.items():
            runs = {}
            runs["render"], frames = _pair(
                clock(lambda plan=plan: list(compositor.render(plan, photos, analyses)))
            )
            runs["encode"], _ = _pair(
                clock(lambda frames=frames: encode_mp4(frames, args.fps, gen.crf, gen.preset))
            )
            del frames
            runs["render_encode"], _ = _pair(
                clock(
                    lambda plan=plan: encode_mp4(
                        compositor.render(plan, photos, analyses), args.fps, gen.crf, gen.preset
                    )
                )
            )
            runs["marked"], _ = _pair(
                clock(lambda plan=plan: encode_mp4(marked_frames(plan), args.fps, gen.crf, gen.preset))
            )
            runs["pose_video"], _ = _pair(
                clock(lambda plan=plan: encode_mp4(render_pose_frames(plan), args.fps, gen.crf, gen.preset))
            )
            if baseline is not None:
                runs["baseline_render_encode"], _ = _pair(
                    clock(
                        lambda plan=plan: encode_mp4(
                            baseline.render(plan, photos, analyses), args.fps, gen.crf, gen.preset
                        )
                    )
                )
                runs["baseline_marked"], _ = _pair(
                    clock(
                        lambda plan=plan: encode_mp4(
                            marked_frames(plan, baseline), args.fps, gen.crf, gen.preset
                        )
                    )
                )
            if repeat:
                for name, (wall, cpu_s) in runs.items():
                    samples[style][name].append(wall)
                    cpu[style][name].append(cpu_s)
        if repeat:
            prepare_scene(plans["romantic"])

    medians = {style: {k: statistics.median(v) for k, v in s.items()} for style, s in samples.items()}
    cpu_medians = {style: {k: statistics.median(v) for k, v in s.items()} for style, s in cpu.items()}
    frames = next(iter(plans.values())).frame_count
    print(f"one core, {frames} frames {args.size} @ {args.fps} fps, median of {args.repeats}; (CPU s)")
    print(
        f"{'style':<9} {'render':>8} {'encode':>8} {'both':>16} {'vs 2 s':>7} {'+marks':>16} "
        f"{'marks %':>7} {'pose mp4':>9}"
    )
    for style, m in medians.items():
        c = cpu_medians[style]
        print(
            f"{style:<9} {m['render']:>7.3f}s {m['encode']:>7.3f}s "
            f"{m['render_encode']:>7.3f}s ({c['render_encode']:.3f}) {m['render_encode'] / TARGET_S:>7.2f} "
            f"{m['marked']:>7.3f}s ({c['marked']:.3f}) {m['marked'] / m['render_encode'] - 1:>+7.1%} "
            f"{m['pose_video']:>8.3f}s"
        )
    if baseline is not None:
        print(f"\nbaseline {args.baseline} side by side (render + encode with marks)")
        print(f"{'style':<9} {'baseline':>16} {'now':>16} {'ratio':>6} {'CPU ratio':>9}")
        for style, m in medians.items():
            c = cpu_medians[style]
            print(
                f"{style:<9} {m['baseline_marked']:>7.3f}s ({c['baseline_marked']:.3f}) "
                f"{m['marked']:>7.3f}s ({c['marked']:.3f}) {m['marked'] / m['baseline_marked']:>6.2f} "
                f"{c['marked'] / c['baseline_marked']:>9.2f}"
            )
    scene_medians = {k: statistics.median(v) for k, v in scene_samples.items()}
    scene_cpu_medians = {k: statistics.median(v) for k, v in scene_cpu.items()}
    print(
        f"\nonce per job: segmentation (both photos) {scene_medians['segmentation']:.3f}s "
        f"({scene_cpu_medians['segmentation']:.3f}) + inpainted backdrop {scene_medians['backdrop']:.3f}s "
        f"({scene_cpu_medians['backdrop']:.3f}) = "
        f"{scene_medians['segmentation'] + scene_medians['backdrop']:.3f}s vs {SCENE_TARGET_S} s; "
        f"the whole scene with both people's layers {scene_medians['scene']:.3f}s "
        f"({scene_cpu_medians['scene']:.3f}), inside render above"
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
        "baseline": args.baseline,
        "median_s": medians,
        "cpu_median_s": cpu_medians,
        "samples_s": samples,
        "scene_target_s": SCENE_TARGET_S,
        "scene_median_s": scene_medians,
        "scene_cpu_median_s": scene_cpu_medians,
    }
    out = ROOT / "bench" / "results" / "preview_render.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


def _pair(timed: tuple[float, float, object]) -> tuple[tuple[float, float], object]:
    """(wall, cpu), result."""
    return (timed[0], timed[1]), timed[2]


if __name__ == "__main__":
    main()
