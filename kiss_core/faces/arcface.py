"""ArcFace identity embeddings from a mounted insightface model pack, run on onnxruntime.

Why: dlib's 128-D descriptor is a weak judge of identity (unrelated faces score ~0.9). When the
operator mounts an insightface pack (e.g. buffalo_l) and names its directory in
`FaceSettings.arcface_pack`, the pack's recognition model (the .onnx whose input is Nx3x112x112;
buffalo_l: w600k_r50.onnx, next to its detector, landmark and age models) gives the embeddings
instead. Faces are still found by dlib: five points taken from its 68 landmarks feed insightface's own
`norm_crop`, so the crop is the one ArcFace was trained on.

Nothing is ever downloaded: the model is loaded by its path (never `get_model(name)` or
`FaceAnalysis`, which fetch packs). insightface and onnx are imported only when a pack is configured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kiss_core.errors import ModelDirectoryError
from kiss_core.media.geometry import LEFT_EYE, RIGHT_EYE
from kiss_core.media.images import require_rgb

RECOGNITION_INPUT = (3, 112, 112)  # channels, height, width of every ArcFace model insightface ships
NOSE_TIP = 30
MOUTH_LEFT, MOUTH_RIGHT = 48, 54  # mouth corners on the image's left and right


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """insightface's five keypoints (5, 2) from iBUG-68 landmarks, in its order as seen in the image:
    left eye, right eye, nose tip, left mouth corner, right mouth corner (eyes: mean of each contour)."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"`landmarks` has to be (68, 2) but is {points.shape}")
    return np.stack(
        [
            points[LEFT_EYE].mean(axis=0),
            points[RIGHT_EYE].mean(axis=0),
            points[NOSE_TIP],
            points[MOUTH_LEFT],
            points[MOUTH_RIGHT],
        ]
    ).astype(np.float32)


def execution_providers(available: Sequence[str] | None = None) -> list[str]:
    """CUDA (with CPU for the operators it lacks) when onnxruntime-gpu sees a GPU, else CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers() if available is None else available
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def find_recognition_model(pack: Path) -> Path:
    """The one .onnx file in `pack` whose input is Nx3x112x112; ModelDirectoryError otherwise."""
    pack = Path(pack)
    if not pack.is_dir():
        raise _fail(pack, "is not a directory (mount the insightface model pack there, e.g. buffalo_l)")
    files = sorted(pack.glob("*.onnx"))
    shapes = {file: _input_shape(pack, file) for file in files}
    found = [file for file, shape in shapes.items() if shape[1:] == RECOGNITION_INPUT]
    if len(found) != 1:
        seen = ", ".join(f"{f.name} {_format_shape(s)}" for f, s in shapes.items()) or "no .onnx files"
        what = "no recognition model" if not found else "more than one recognition model"
        raise _fail(pack, f"{what} (an .onnx file with input Nx3x112x112); found {seen}")
    return found[0]


class ArcFaceEmbedder:
    """A pack's ArcFace model on one onnxruntime session (thread-safe), loaded and warmed up once."""

    def __init__(self, pack: Path, providers: Sequence[str] | None = None):
        self.model_file = find_recognition_model(pack)
        try:
            import onnxruntime
            from insightface.model_zoo.arcface_onnx import ArcFaceONNX
            from insightface.utils.face_align import norm_crop
        except ImportError as error:
            raise _fail(pack, f"insightface is needed to run it but cannot be imported ({error})") from error
        self._norm_crop = norm_crop
        providers = list(providers or execution_providers())
        if "CUDAExecutionProvider" in providers:
            # CUDA and cuDNN from the nvidia-* wheels (torch's), which are not on the loader's path.
            with contextlib.suppress(OSError, RuntimeError):  # else the session falls back to CPU
                getattr(onnxruntime, "preload_dlls", lambda: None)()
        try:
            session = onnxruntime.InferenceSession(str(self.model_file), providers=providers)
            # ArcFaceONNX reads the graph's first nodes to pick the input normalisation (127.5/127.5
            # for every pack model; 0/1 for old MXNet exports that normalise inside the graph).
            self._model = ArcFaceONNX(model_file=str(self.model_file), session=session)
            warm = self._model.get_feat(np.zeros((112, 112, 3), np.uint8))
        except Exception as error:  # a file onnxruntime cannot run: wrong opset, more than one output
            raise _fail(pack, f"{self.model_file.name} cannot be run by onnxruntime ({error})") from error
        # What the session runs on: onnxruntime drops CUDA (with a warning) when its libraries are missing.
        self.providers: list[str] = session.get_providers()
        self.dimension = int(np.asarray(warm).size)
        self.description = f"cosine of ArcFace {self.dimension}-D embeddings ({self.model_file.name})"

    def align(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The 112x112 RGB crop ArcFace sees: five points onto insightface's `arcface_dst` template."""
        return self._norm_crop(require_rgb(image), five_points(landmarks), image_size=RECOGNITION_INPUT[1])

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The unit-length float32 embedding of the face with these 68 landmarks in an RGB uint8 photo."""
        crop = self.align(image, landmarks)
        # insightface takes BGR (cv2.imread order): get_feat swaps to RGB when it builds the blob.
        feature = self._model.get_feat(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        vector = np.asarray(feature, dtype=np.float32).ravel()
        return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _input_shape(pack: Path, file: Path) -> tuple[int | str, ...]:
    """The first real input's shape (dynamic dimensions as their names); the file must parse as ONNX."""
    try:
        import onnx

        graph = onnx.load(str(file), load_external_data=False).graph
        weights = {initializer.name for initializer in graph.initializer}
        first = next(i for i in graph.input if i.name not in weights)
    except ImportError as error:
        raise _fail(pack, f"onnx is needed to read {file.name} but cannot be imported ({error})") from error
    except Exception as error:  # DecodeError for a truncated or foreign file, StopIteration: no input
        what = f"{file.name} is not a loadable ONNX model ({type(error).__name__}: {error})"
        raise _fail(pack, what) from error
    dims: Any = first.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


def _format_shape(shape: tuple[int | str, ...]) -> str:
    return "(" + "x".join(str(d) for d in shape) + ")"


def _fail(pack: Path, what: str) -> ModelDirectoryError:
    return ModelDirectoryError(f"model directory {pack}: {what}")
