"""CPU pipeline benchmark: per-stage times, and one preview job through Serve vs in one process.

    .venv/bin/python bench/cpu_pipeline.py [--repeats 5] [--seconds 5] [--size 832x480] [--fps 24]

Prints one table and writes bench/results/cpu_pipeline.json. Stage timings use real photos only for
face *analysis*; everything generated uses synthetic subjects. Serve and direct runs alternate in one
process so machine noise hits both alike; the overhead is the ratio of their medians.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kiss_core.faces.analysis import DlibFaceAnalyzer  # noqa: E402
from kiss_core.faces.synthetic import source_photos, synthetic_subject_png  # noqa: E402
from kiss_core.generation.backends.preview import PreviewFrames  # noqa: E402
from kiss_core.generation.conditioning import Conditioning  # noqa: E402
from kiss_core.jobs.admission import JobAdmission  # noqa: E402
from kiss_core.jobs.runner import JobRunner  # noqa: E402
from kiss_core.jobs.stages import InProcessStages  # noqa: E402
from kiss_core.jobs.store import JobStore  # noqa: E402
from kiss_core.media.images import decode_image  # noqa: E402
from kiss_core.media.video import encode_mp4  # noqa: E402
from kiss_core.scene.choreography import plan_kiss  # noqa: E402
from kiss_core.schemas import Attestation, SubjectConsent, VideoParams  # noqa: E402
from kiss_core.settings import Settings  # noqa: E402
from kiss_core.storage import LocalDirStore  # noqa: E402

TARGETS = {"analysis_1mp_s": 0.300, "render_encode_s": 3.0, "serve_overhead": 0.10, "job_over_render": 1.8}


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median seconds of `repeats` calls (after one warm-up) and the last result."""
    result = fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), result


def one_megapixel_photo() -> bytes:
    """The astronaut photo (a real adult; analysis only) scaled to 1024x1024 = 1 MP, as a JPEG."""
    image = Image.open(source_photos()["astronaut"]).convert("RGB").resize((1024, 1024), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def stage_timings(settings: Settings, params: VideoParams, repeats: int) -> dict[str, float]:
    analyzer = DlibFaceAnalyzer(settings.faces)
    photo = one_megapixel_photo()
    analysis_s, _ = timed(lambda: analyzer.analyze_bytes(photo, "a", settings.limits), repeats)

    photos = {s: decode_image(synthetic_subject_png(i), settings.limits, s) for i, s in enumerate("ab")}
    analyses = {s: analyzer.analyze(photos[s], s) for s in "ab"}
    camera = settings.generator.camera_push_in
    plan_s, plan = timed(lambda: plan_kiss(analyses, params, camera), repeats)
    backend = PreviewFrames()  # the job's renderer: the compositor and, when the plan moves it, the camera

    def render() -> Iterator[np.ndarray]:
        return backend.frames(plan, photos, analyses, Conditioning(), params, lambda _share: None)

    render_s, frames = timed(lambda: list(render()), repeats)
    encode_s, _ = timed(lambda: encode_mp4(frames, params.fps), repeats)
    both_s, _ = timed(lambda: encode_mp4(render(), params.fps), repeats)
    return {
        "analysis_1mp_s": analysis_s,
        "plan_s": plan_s,
        "render_s": render_s,
        "encode_s": encode_s,
        "render_encode_s": both_s,
    }


def job_latencies(settings: Settings, params: VideoParams, repeats: int) -> dict[str, list[float]]:
    """End-to-end preview jobs: through the Serve graph vs admission and runner in one process."""
    import httpx
    import ray
    from ray import serve

    from graph import AppArgs, build_app

    photos = {"a": synthetic_subject_png(0), "b": synthetic_subject_png(1)}
    store_root = Path(tempfile.mkdtemp(prefix="kissbench-"))
    store = LocalDirStore(store_root / "direct")
    stages = InProcessStages(settings, store)
    admission = JobAdmission(JobStore(store), stages, settings.limits)
    runner = JobRunner(JobStore(store), stages, settings.jobs)
    attestation = Attestation(a=SubjectConsent(consented=True), b=SubjectConsent(consented=True))

    async def direct() -> None:
        manifest = await admission.submit(params, photos, attestation)
        done = await runner.run(manifest.id)
        assert done.status == "completed", done.error

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": 8765})
    local = {"storage": {"backend": "local", "local_root": str(store_root / "serve")}}
    serve.run(build_app(AppArgs(profile="local", settings=local)), name="kissgen", route_prefix="/")
    client = httpx.Client(base_url="http://127.0.0.1:8765", timeout=120)
    fields = {
        "consent_a": "true",
        "consent_b": "true",
        **{k: str(v) for k, v in params.model_dump(exclude_none=True).items()},
    }

    def via_serve() -> float:
        """Seconds from sending the POST to the job's `completed_at` (same clock: both on this machine).

        Polling is gentle (0.25 s) and not on the measured path: on 2 cores a tight polling loop
        takes CPU from the generator and would be counted as serving overhead.
        """
        files = {"subject_a": ("a.png", photos["a"]), "subject_b": ("b.png", photos["b"])}
        sent = datetime.now(UTC)
        response = client.post("/v1/videos", data=fields, files=files)
        response.raise_for_status()
        location = response.headers["location"]
        while (job := client.get(location).json())["status"] not in ("completed", "failed"):
            time.sleep(0.25)
        assert job["status"] == "completed", job["error"]
        return (datetime.fromisoformat(job["completed_at"]) - sent).total_seconds()

    def in_process() -> float:
        start = time.perf_counter()
        asyncio.run(direct())
        return time.perf_counter() - start

    results: dict[str, list[float]] = {"serve_job_s": [], "direct_job_s": []}
    try:
        via_serve()  # warm-up: replicas load their models lazily on first use
        in_process()
        for _ in range(repeats):
            results["serve_job_s"].append(via_serve())
            results["direct_job_s"].append(in_process())
    finally:
        client.close()
        serve.shutdown()
        ray.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", default="832x480")
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--skip-serve", action="store_true", help="only the per-stage timings")
    args = parser.parse_args()

    settings = Settings()
    params = VideoParams(style="romantic", seconds=args.seconds, size=args.size, fps=args.fps)
    stages = stage_timings(settings, params, args.repeats)
    rows: list[tuple[str, float, str]] = [
        ("analysis per 1 MP photo", stages["analysis_1mp_s"], f"<= {TARGETS['analysis_1mp_s']:.3f} s"),
        ("plan", stages["plan_s"], ""),
        (f"render {params.frame_count} frames {params.size}", stages["render_s"], ""),
        ("encode H.264", stages["encode_s"], ""),
        ("render + encode (streamed)", stages["render_encode_s"], f"<= {TARGETS['render_encode_s']:.1f} s"),
    ]
    report: dict[str, Any] = {
        "params": params.model_dump(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "stages_s": stages,
        "targets": TARGETS,
    }
    if not args.skip_serve:
        jobs = job_latencies(settings, params, args.repeats)
        serve_s, direct_s = statistics.median(jobs["serve_job_s"]), statistics.median(jobs["direct_job_s"])
        overhead = serve_s / direct_s - 1
        job_ratio = direct_s / stages["render_encode_s"]
        rows += [
            ("job end-to-end, in one process", direct_s, ""),
            ("job end-to-end, through Serve", serve_s, ""),
            ("serving overhead (ratio - 1)", overhead, f"<= {TARGETS['serve_overhead']:.0%}"),
            ("job in one process / render + encode", job_ratio, f"<= {TARGETS['job_over_render']:.1f}x"),
        ]
        report["jobs_s"] = jobs
        report["serve_overhead"] = overhead
        report["job_over_render_encode"] = job_ratio

    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'median':>9}  target")
    for name, value, target in rows:
        if "overhead" in name:
            shown = f"{value:+.1%}"
        else:
            shown = f"{value:.2f}x" if "/" in name else f"{value:.3f} s"
        print(f"{name:<{width}}  {shown:>9}  {target}")
    out = ROOT / "bench" / "results" / "cpu_pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
