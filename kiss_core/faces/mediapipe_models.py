"""MediaPipe's .tflite models, read from the mediapipe wheel and run by LiteRT's interpreter.

The mediapipe wheel (0.10.21) ships its models as files: the selfie segmenter (person vs
background) and the full-range face detector (faces turned past what HOG finds). mediapipe itself
pins numpy<2 and protobuf<5, so the Makefile and images install it `--no-deps` and nothing here
imports it: `importlib.util.find_spec` locates the package directory without running it, and
`ai_edge_litert` (numpy 2) runs the files. Nothing is downloaded at run time.

A LiteRT interpreter keeps its tensors between `invoke`s, so one interpreter runs one call at a
time: `TfliteModel` holds a lock, and each process loads each model once (`tflite_model`).
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from pathlib import Path

import numpy as np

SELFIE_SEGMENTATION = "selfie_segmentation/selfie_segmentation.tflite"  # 256x256 RGB -> person prob.
FACE_DETECTION_FULL_RANGE = "face_detection/face_detection_full_range_sparse.tflite"  # 192x192, 2304 anchors


class MediaPipeMissing(RuntimeError):
    """The mediapipe wheel (for its model files) is not installed."""


def model_path(name: str) -> Path:
    """The model file `name` (relative to mediapipe/modules) inside the installed mediapipe wheel."""
    spec = importlib.util.find_spec("mediapipe")  # locates the package; does not import it
    if spec is None or not spec.submodule_search_locations:
        raise MediaPipeMissing(
            "the mediapipe wheel is not installed; its model files are needed: "
            "`pip install --no-deps mediapipe==0.10.21` (the Makefile and images do this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "modules" / name
    if not path.is_file():
        raise MediaPipeMissing(f"mediapipe is installed but has no {name}; mediapipe==0.10.21 ships it")
    return path


class TfliteModel:
    """One .tflite model on one CPU thread, one call at a time (the interpreter keeps state)."""

    def __init__(self, path: Path, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter  # imported here: its import costs ~0.3 s

        self.path = path
        self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self._interpreter.allocate_tensors()
        (self._input,) = self._interpreter.get_input_details()
        self._outputs = self._interpreter.get_output_details()
        self._lock = threading.Lock()

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) the model takes."""
        _, height, width, _ = (int(v) for v in self._input["shape"])
        return width, height

    def __call__(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Run on one float32 (1, H, W, C) input; the outputs in the model's order, copied out."""
        with self._lock:
            self._interpreter.set_tensor(self._input["index"], np.ascontiguousarray(tensor, np.float32))
            self._interpreter.invoke()
            return [self._interpreter.get_tensor(output["index"]).copy() for output in self._outputs]


_LOADING = threading.Lock()


def tflite_model(name: str) -> TfliteModel:
    """The process's one interpreter for the model `name` (see the constants above)."""
    with _LOADING:  # two threads asking first must not load two copies
        return _load(name)


@functools.cache
def _load(name: str) -> TfliteModel:
    return TfliteModel(model_path(name))
