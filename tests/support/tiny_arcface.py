"""A tiny random-weight insightface model pack: an ArcFace-shaped recognition model and a decoy.

The recognition model has buffalo_l's interface (input "input.1", float Nx3x112x112 with a dynamic
batch, one (N, dim) output) and a small body: an 8x8 stride-8 Conv, Relu, Flatten, Gemm. Its first
nodes are not named Sub/Mul, so insightface's ArcFaceONNX normalises inputs with 127.5/127.5 as for
w600k_r50. The decoy stands in for the pack's detector (a different input size). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RECOGNITION_FILE = "w600k_r50.onnx"
DECOY_FILE = "det_10g.onnx"


def tiny_arcface_model(size: int = 112, dim: int = 512, seed: int = 0) -> onnx.ModelProto:
    """Conv(3->8, 8x8, stride 8) -> Relu -> Flatten -> Gemm(-> dim), seeded normal weights."""
    rng = np.random.default_rng(seed)
    channels, kernel = 8, 8
    features = channels * (size // kernel) ** 2
    conv = rng.normal(0.0, 0.1, (channels, 3, kernel, kernel)).astype(np.float32)
    fc = rng.normal(0.0, 1.0 / np.sqrt(features), (features, dim)).astype(np.float32)
    nodes = [
        helper.make_node(
            "Conv",
            ["input.1", "conv_w"],
            ["conv"],
            name="Conv_0",
            kernel_shape=[kernel] * 2,
            strides=[kernel] * 2,
        ),
        helper.make_node("Relu", ["conv"], ["relu"], name="Relu_1"),
        helper.make_node("Flatten", ["relu"], ["flat"], name="Flatten_2", axis=1),
        helper.make_node("Gemm", ["flat", "fc_w"], ["fc1"], name="Gemm_3"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, size, size])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["None", dim])],
        initializer=[numpy_helper.from_array(conv, "conv_w"), numpy_helper.from_array(fc, "fc_w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def write_pack(root: Path, dim: int = 512) -> Path:
    """`root` as a model pack: the tiny recognition model and a 64x64-input decoy (returned: root)."""
    root.mkdir(parents=True, exist_ok=True)
    onnx.save(tiny_arcface_model(112, dim), root / RECOGNITION_FILE)
    onnx.save(tiny_arcface_model(64, 10, seed=1), root / DECOY_FILE)
    return root
