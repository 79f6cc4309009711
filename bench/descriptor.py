"""dlib's 128-D face descriptor: dlib's ResNet (`compute_face_descriptor`) against its port to onnxruntime.

    .venv/bin/python bench/descriptor.py [--repeats 3]

Side by side in one run, on the seven real faces of the test photos (face analysis only):
- the one-time cost of each, in a fresh interpreter: dlib loading its model; for onnxruntime,
  importing it (the replicas that embed import it already, for the safety models), importing `onnx`,
  reading the .dat file, building the ONNX graph, opening the session from its bytes, the first call;
  with the RSS each adds. For comparison, importing torch (what the torch port cost) in another one;
- per face, the chip cut included (what `DlibFaceAnalyzer.embed` costs): dlib; onnxruntime on one
  thread (`DlibDescriptor`, as the analyzer runs it) one face at a time and all seven in one batch;
- whether descriptors overlap across threads (the GIL test): one thread computing 6 descriptors
  against two threads each computing 6 at once. 1.0x means the second thread was free, 2.0x that the
  two ran one after the other (the GIL held throughout, as dlib holds it). Each dlib thread has its own
  model object, so only the GIL can serialise them; onnxruntime's threads share one session. On a
  shared, loaded machine that ratio also counts the cores the OS did not give, so the longest wait of a
  pure-Python thread running beside 6 descriptors is recorded too: a descriptor's length if the GIL is
  held, a few ms if it is not.

Best of `--repeats` rounds (the least disturbed: the machine is shared, so the load average is
recorded with the numbers; the per-face variants take turns within each round). Prints one table
and writes bench/results/descriptor.json.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
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

from kiss_core.faces.analysis import dlib_shape, face_chip  # noqa: E402
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


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def one_time_costs() -> dict[str, float]:
    """What a replica pays once, in the order it pays it (run in a fresh interpreter)."""
    model = face_recognition_models.face_recognition_model_location()
    load = {"dlib_model_load_s": timed(lambda: dlib.face_recognition_model_v1(model))}
    before = rss_mib()
    start = time.perf_counter()
    import onnxruntime

    load["import_onnxruntime_s"] = time.perf_counter() - start
    load["import_onnxruntime_rss_mib"] = rss_mib() - before
    before = rss_mib()  # from here: what embedding adds to a replica that has onnxruntime already
    start = time.perf_counter()
    import onnx  # noqa: F401

    from kiss_core.faces.dlib_resnet import DlibDescriptor, build_onnx_model
    from kiss_core.faces.dlib_resnet_format import read_dlib_network

    load["import_onnx_s"] = time.perf_counter() - start
    load["import_onnx_rss_mib"] = rss_mib() - before
    # The whole load as DlibDescriptor does it (read, build, open, first call), then its second call.
    start = time.perf_counter()
    descriptor = DlibDescriptor(model)
    load["descriptor_load_s"] = time.perf_counter() - start
    chip = np.zeros((1, 150, 150, 3), np.uint8)
    load["second_call_s"] = timed(lambda: descriptor(chip))
    load["onnx_and_descriptor_rss_mib"] = rss_mib() - before  # what the replica's RSS grows by
    # Of which glibc keeps the load's freed copies (the .dat, the graph, its bytes) resident until a
    # malloc_trim; what stays is the session's weights (fused and reordered) and buffers.
    gc.collect()
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    load["onnx_and_descriptor_rss_after_malloc_trim_mib"] = rss_mib() - before
    # The load's steps apart (after the RSS is measured: they allocate again).
    start = time.perf_counter()
    network = read_dlib_network(model)
    load["read_dat_s"] = time.perf_counter() - start
    start = time.perf_counter()
    graph = build_onnx_model(network).SerializeToString()
    load["build_graph_s"] = time.perf_counter() - start
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    load["open_session_s"] = timed(
        lambda: onnxruntime.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])
    )
    return load


def torch_import_cost() -> dict[str, float]:
    """The torch port's comparison: importing torch in a fresh interpreter."""
    before = rss_mib()
    start = time.perf_counter()
    import torch  # noqa: F401

    return {"import_torch_s": time.perf_counter() - start, "import_torch_rss_mib": rss_mib() - before}


def fresh(flag: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, flag], check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--load-only", action="store_true", help="print the one-time costs as JSON and stop")
    parser.add_argument(
        "--torch-only", action="store_true", help="print torch's import cost as JSON and stop"
    )
    args = parser.parse_args()
    if args.load_only or args.torch_only:
        print(json.dumps(one_time_costs() if args.load_only else torch_import_cost()))
        return
    model = face_recognition_models.face_recognition_model_location()
    faces = [(image, face.landmarks) for image, face in source_faces()]
    shapes = [dlib_shape(landmarks) for _, landmarks in faces]
    # One-time costs in fresh interpreters (this one has the analyzer's copy loaded by source_faces()).
    load = fresh("--load-only")
    comparison = fresh("--torch-only")
    import onnxruntime

    from kiss_core.faces.dlib_resnet import dlib_descriptor

    descriptor = dlib_descriptor(model)  # the analyzer's: one intra-op thread
    chips = np.stack([face_chip(image, landmarks) for image, landmarks in faces])
    encoders = [dlib.face_recognition_model_v1(model) for _ in range(2)]

    def dlib_faces() -> float:
        start = time.perf_counter()
        for (image, _), shape in zip(faces, shapes, strict=True):
            encoders[0].compute_face_descriptor(image, shape)
        return (time.perf_counter() - start) / len(faces)

    def onnxruntime_faces() -> float:  # as embed(): the chip, then the network, one face at a time
        start = time.perf_counter()
        for image, landmarks in faces:
            descriptor(face_chip(image, landmarks)[None])
        return (time.perf_counter() - start) / len(faces)

    def onnxruntime_batch() -> float:
        start = time.perf_counter()
        descriptor(np.stack([face_chip(image, landmarks) for image, landmarks in faces]))
        return (time.perf_counter() - start) / len(faces)

    onnxruntime_batch()  # the arena grows to a batch of 7 once
    # Rounds interleave the variants, so a burst of load on the shared machine hits them all alike.
    per_face: dict[str, float] = {}
    for _ in range(args.repeats):
        rounds = {
            "dlib": dlib_faces(),
            "onnxruntime_1_thread": onnxruntime_faces(),
            f"onnxruntime_1_thread_batch_of_{len(faces)}": onnxruntime_batch(),
        }
        per_face = {name: min(seconds, per_face.get(name, seconds)) for name, seconds in rounds.items()}

    six = [(faces[i % len(faces)], shapes[i % len(faces)]) for i in range(GIL_DESCRIPTORS)]

    def dlib_six(thread: int) -> None:
        for (image, _), shape in six:
            encoders[thread].compute_face_descriptor(image, shape)

    def onnxruntime_six(_thread: int) -> None:
        for (image, landmarks), _ in six:
            descriptor(face_chip(image, landmarks)[None])

    gil: dict[str, dict[str, float]] = {}
    for name, work in (("dlib", dlib_six), ("onnxruntime_1_thread", onnxruntime_six)):
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
    ours = descriptor(chips)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(ours, axis=1)
    cosine = np.sum(reference * ours, axis=1) / norms

    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)),
            "load_average_1min": os.getloadavg()[0],
            "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
            "dlib": dlib.__version__,
            "dlib_uses_blas": bool(getattr(dlib, "DLIB_USE_BLAS", False)),
        },
        "faces": len(faces),
        "load_s": load,
        "torch_port_comparison": comparison,
        "per_face_ms": {name: seconds * 1000 for name, seconds in per_face.items()},
        "gil_test": gil,
        "max_abs_difference": float(np.abs(reference - ours).max()),
        "min_cosine": float(cosine.min()),
    }
    print(
        f"dlib descriptor vs the same network on onnxruntime, {len(faces)} real faces, best of {args.repeats}"
    )
    print(f"  machine: {result['machine']}")
    print(f"  {'one-time cost (fresh process)':<48}{'s or MiB':>10}")
    for name, value in {**load, **comparison}.items():
        print(f"  {name:<48}{value:>10.3f}")
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
