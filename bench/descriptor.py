"""dlib's 128-D face descriptor: dlib's own ResNet (`compute_face_descriptor`) against its torch port.

    .venv/bin/python bench/descriptor.py [--repeats 3]

Side by side in one run, on the seven real faces of the test photos (face analysis only):
- the one-time cost of each: importing torch, reading the .dat file, building the module, the first
  call (oneDNN picks its kernels), against dlib loading its model;
- per face, the chip cut included (what `DlibFaceAnalyzer.embed` costs): dlib; torch on one thread
  (`torch.set_num_threads(1)`) and on the default count; torch with all seven faces in one batch;
- whether descriptors overlap across threads (the GIL test): one thread computing 6 descriptors
  against two threads each computing 6 at once. 1.0x means the second thread was free, 2.0x that the
  two ran one after the other (the GIL held throughout, as dlib holds it). Each dlib thread has its own
  model object, so only the GIL can serialise them. On a shared, loaded machine that ratio also counts
  the cores the OS did not give, so the longest wait of a pure-Python thread running beside 6
  descriptors is recorded too: a descriptor's length if the GIL is held, a few ms if it is not.

Best of `--repeats` rounds (the least disturbed: the machine is shared, so the load average is
recorded with the numbers; the per-face variants take turns within each round). Prints one table
and writes bench/results/descriptor.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dlib  # noqa: E402
import face_recognition_models  # noqa: E402
import numpy as np  # noqa: E402

from kiss_core.faces.analysis import face_chip  # noqa: E402
from kiss_core.faces.synthetic import source_faces  # noqa: E402

GIL_DESCRIPTORS = 6


def best_of(repeats: int, fn: Callable[[], float]) -> float:
    """The smallest of `repeats` measurements, each returned by `fn` in seconds."""
    return min(fn() for _ in range(repeats))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def in_threads(count: int, work: Callable[[int], object]) -> float:
    """Seconds for `count` threads running work(thread index) at once."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def python_thread_longest_wait(work: Callable[[], object]) -> float:
    """The longest a pure-Python thread waited between two of its steps while `work` ran in another.

    A call that holds the GIL stops every Python thread for its whole length (dlib: a descriptor);
    one that releases it leaves them waiting a switch interval (5 ms) at most, plus what the OS adds.
    """
    stop = threading.Event()
    longest = [0.0]

    def tick() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            now = time.perf_counter()
            longest[0] = max(longest[0], now - last)
            last = now

    ticker = threading.Thread(target=tick)
    ticker.start()
    work()
    stop.set()
    ticker.join()
    return longest[0]


def shape_of(landmarks: np.ndarray) -> dlib.full_object_detection:
    points = np.asarray(landmarks, dtype=np.float64)
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    rect = dlib.rectangle(round(x0), round(y0), round(x1), round(y1))
    return dlib.full_object_detection(rect, dlib.points([dlib.point(round(x), round(y)) for x, y in points]))


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def one_time_costs() -> dict[str, float]:
    """What a replica pays once, in the order it pays it (run in a fresh interpreter)."""
    model = face_recognition_models.face_recognition_model_location()
    load = {"dlib_model_load_s": timed(lambda: dlib.face_recognition_model_v1(model))}
    start = time.perf_counter()
    before = rss_mib()
    import torch

    load["import_torch_s"] = time.perf_counter() - start
    load["import_torch_rss_mib"] = rss_mib() - before
    before = rss_mib()
    from kiss_core.faces.dlib_resnet import DlibResNet
    from kiss_core.faces.dlib_resnet_format import read_dlib_network

    start = time.perf_counter()
    network = read_dlib_network(model)
    load["read_dat_s"] = time.perf_counter() - start
    start = time.perf_counter()
    net = DlibResNet(network).eval()
    load["build_module_s"] = time.perf_counter() - start
    chip = torch.zeros((1, 150, 150, 3), dtype=torch.uint8)
    with torch.inference_mode():
        load["first_call_s"] = timed(
            lambda: net(chip)
        )  # oneDNN sets up its kernels: DlibDescriptor's warm-up
        load["second_call_s"] = timed(lambda: net(chip))
    load["torch_net_rss_mib"] = rss_mib() - before  # weights, and oneDNN's buffers after a call
    return load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--load-only", action="store_true", help="print the one-time costs as JSON and stop")
    args = parser.parse_args()
    if args.load_only:
        print(json.dumps(one_time_costs()))
        return
    model = face_recognition_models.face_recognition_model_location()
    faces = [(image, face.landmarks) for image, face in source_faces()]
    shapes = [shape_of(landmarks) for _, landmarks in faces]
    # One-time costs in a fresh interpreter (this one has the analyzer's copy loaded by source_faces()).
    fresh = subprocess.run(
        [sys.executable, __file__, "--load-only"], check=True, capture_output=True, text=True
    )
    load: dict[str, float] = json.loads(fresh.stdout)
    import torch

    from kiss_core.faces.dlib_resnet import DlibResNet
    from kiss_core.faces.dlib_resnet_format import read_dlib_network

    default_threads = torch.get_num_threads()
    net = DlibResNet(read_dlib_network(model)).eval()
    chips = np.stack([face_chip(image, landmarks) for image, landmarks in faces])

    def torch_embed(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(batch)).numpy()

    torch_embed(chips[:1])

    encoders = [dlib.face_recognition_model_v1(model) for _ in range(2)]

    def dlib_faces() -> float:
        start = time.perf_counter()
        for (image, _), shape in zip(faces, shapes, strict=True):
            encoders[0].compute_face_descriptor(image, shape)
        return (time.perf_counter() - start) / len(faces)

    def torch_faces() -> float:  # as embed(): the chip, then the network, one face at a time
        start = time.perf_counter()
        for image, landmarks in faces:
            torch_embed(face_chip(image, landmarks)[None])
        return (time.perf_counter() - start) / len(faces)

    def torch_batch() -> float:
        start = time.perf_counter()
        torch_embed(np.stack([face_chip(image, landmarks) for image, landmarks in faces]))
        return (time.perf_counter() - start) / len(faces)

    # Rounds interleave the variants, so a burst of load on the shared machine hits them all alike.
    per_face: dict[str, float] = {}
    for _ in range(args.repeats):
        rounds = {"dlib": dlib_faces()}
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            torch_faces()  # warm-up at this thread count
            rounds[f"torch_{threads}_thread"] = torch_faces()
            rounds[f"torch_{threads}_thread_batch_of_{len(faces)}"] = torch_batch()
        per_face = {name: min(seconds, per_face.get(name, seconds)) for name, seconds in rounds.items()}

    # The GIL test, torch on one thread per caller (as a replica with 1 CPU runs it).
    torch.set_num_threads(1)
    six = [(faces[i % len(faces)], shapes[i % len(faces)]) for i in range(GIL_DESCRIPTORS)]

    def dlib_six(thread: int) -> None:
        for (image, _), shape in six:
            encoders[thread].compute_face_descriptor(image, shape)

    def torch_six(_thread: int) -> None:
        for (image, landmarks), _ in six:
            torch_embed(face_chip(image, landmarks)[None])

    gil: dict[str, dict[str, float]] = {}
    for name, work in (("dlib", dlib_six), ("torch_1_thread", torch_six)):
        one = best_of(args.repeats, lambda work=work: in_threads(1, work))  # type: ignore[misc]
        two = best_of(args.repeats, lambda work=work: in_threads(2, work))  # type: ignore[misc]
        gaps = [python_thread_longest_wait(lambda work=work: work(0)) for _ in range(args.repeats)]  # type: ignore[misc]
        gil[name] = {
            "one_thread_s": one,
            "two_threads_s": two,
            "ratio": two / one,
            "python_thread_longest_wait_ms": 1000 * min(gaps),
        }

    reference = np.stack(
        [np.asarray(encoders[0].compute_face_descriptor(f[0], s)) for f, s in zip(faces, shapes, strict=True)]
    ).astype(np.float32)
    torch.set_num_threads(default_threads)
    ours = torch_embed(chips)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(ours, axis=1)
    cosine = np.sum(reference * ours, axis=1) / norms

    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)),
            "load_average_1min": os.getloadavg()[0],
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_default_threads": default_threads,
            "dlib": dlib.__version__,
            "dlib_uses_blas": bool(getattr(dlib, "DLIB_USE_BLAS", False)),
        },
        "faces": len(faces),
        "load_s": load,
        "per_face_ms": {name: seconds * 1000 for name, seconds in per_face.items()},
        "gil_test": gil,
        "max_abs_difference": float(np.abs(reference - ours).max()),
        "min_cosine": float(cosine.min()),
    }
    print(f"dlib descriptor vs its torch port, {len(faces)} real faces, best of {args.repeats}")
    print(f"  machine: {result['machine']}")
    print(f"  {'one-time cost (fresh process)':<34}{'s or MiB':>10}")
    for name, value in load.items():
        print(f"  {name:<34}{value:>10.3f}")
    print(f"  {'per face (chip included)':<34}{'ms':>10}{'vs dlib':>10}")
    for name, seconds in per_face.items():
        print(f"  {name:<34}{seconds * 1000:>10.1f}{per_face['dlib'] / seconds:>9.1f}x")
    print(
        f"  {'GIL test: 6 descriptors':<26}{'1 thread s':>11}{'2 threads s':>12}{'ratio':>7}"
        f"{'py wait ms':>11}"
    )
    for name, row in gil.items():
        print(
            f"  {name:<26}{row['one_thread_s']:>11.3f}{row['two_threads_s']:>12.3f}{row['ratio']:>6.2f}x"
            f"{row['python_thread_longest_wait_ms']:>11.1f}"
        )
    print(f"  max abs difference {result['max_abs_difference']:.2e}, min cosine {result['min_cosine']:.8f}")
    out = ROOT / "bench" / "results" / "descriptor.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
