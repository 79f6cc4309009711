"""A reader for dlib's serialized face-recognition ResNet (dlib_face_recognition_resnet_model_v1.dat).

It follows dlib's own serialization (dlib/serialize.h, dlib/dnn/{core,layers,input,loss}.h,
dlib/cuda/tensor.h) for the `anet_type` of dlib's examples/dnn_face_recognition_ex.cpp:

    loss_metric<fc_no_bias<128,avg_pool_everything<alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2,relu<affine<con<32,7,7,2,2,input_rgb_image_sized<150>>>>>>>>>>>>>

A nested `add_layer` writes its version, then its whole subnetwork, then its own layer and state;
so the file holds every version top-down, the input layer, then each layer's details bottom-up.
Tensors are raw little-endian float32 (np.frombuffer: the 22 MB file parses in ~0.05 s, so no
converted-weights cache is kept); scalars use dlib's compact integer and mantissa/exponent formats.
NumPy only: the network is built for onnxruntime by kiss_core.faces.dlib_resnet.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

CHIP_SIZE = 150  # input_rgb_image_sized<150>
CHIP_PADDING = 0.25  # compute_face_descriptor's default padding around the face
DESCRIPTOR_DIMENSION = 128

# ---------------------------------------------------------------------------------------------
# The architecture, top (loss) to bottom (input), as dnn_face_recognition_ex.cpp spells it


@dataclass
class Layer:
    """One of dlib's layers; from the architecture without weights, from the file with them.

    kind: con, affine, relu, max_pool, avg_pool, add_prev, fc, or tag/skip (dlib's add_tag_layer and
    add_skip_layer, which hold no layer of their own). `window` 0 is a window over the whole input.
    """

    kind: str
    filters: int = 0
    window: int = 0
    stride: int = 1
    padding: int = 0
    tag: int = 0
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def _ares(n: int, stride: int, down: bool) -> list[Layer]:
    """ares: relu<add_prev1<block<N,1,tag1<>>>>; ares_down: relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<
    block<N,2,tag1<>>>>>>>>, where block<N,s> = affine<con<N,3,3,1,1,relu<affine<con<N,3,3,s,s,...>>>>>."""
    block = [
        Layer("affine"),
        Layer("con", filters=n, window=3, stride=1),
        Layer("relu"),
        Layer("affine"),
        Layer("con", filters=n, window=3, stride=stride),
        Layer("tag", tag=1),
    ]
    if down:
        pool = [Layer("avg_pool", window=2, stride=2), Layer("skip", tag=1), Layer("tag", tag=2)]
        return [Layer("relu"), Layer("add_prev", tag=2), *pool, *block]
    return [Layer("relu"), Layer("add_prev", tag=1), *block]


def _architecture() -> list[Layer]:
    # alevel0 (top) .. alevel4 (bottom): (channels, plain blocks above, whether a down block is below them)
    levels = [(256, 0, True), (256, 2, True), (128, 2, True), (64, 3, True), (32, 3, False)]
    # avg_pool_everything is avg_pool<0,0,1,1>: one window over the whole input.
    arch = [Layer("fc", filters=DESCRIPTOR_DIMENSION), Layer("avg_pool", window=0, stride=1)]
    for n, plain, down in levels:
        for _ in range(plain):
            arch += _ares(n, 1, down=False)
        if down:
            arch += _ares(n, 2, down=True)
    arch += [Layer("max_pool", window=3, stride=2), Layer("relu"), Layer("affine")]
    arch += [Layer("con", filters=32, window=7, stride=2)]
    return arch


# ---------------------------------------------------------------------------------------------
# dlib's serialization primitives


class DlibFormatError(ValueError):
    """The file is not the network this reader knows (names what was expected and where)."""


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def integer(self) -> int:
        """dlib's compact integer: a control byte (size in the low 4 bits, 0x80 = negative), then
        `size` little-endian bytes."""
        control = self.byte()
        size = control & 0x0F
        if size == 0 or size > 8:
            raise DlibFormatError(f"bad integer control byte {control:#x} at offset {self.pos - 1}")
        value = int.from_bytes(self.data[self.pos : self.pos + size], "little")
        self.pos += size
        return -value if control & 0x80 else value

    def real(self) -> float:
        """float_details: int64 mantissa, int16 exponent (value = mantissa * 2**exponent)."""
        if self.data[self.pos] & 0x70:
            raise DlibFormatError(f"old ASCII float format at offset {self.pos} is not supported")
        mantissa, exponent = self.integer(), self.integer()
        if exponent >= 32000:
            return {32000: float("inf"), 32001: float("-inf")}.get(exponent, float("nan"))
        return float(np.ldexp(np.float64(mantissa), exponent))

    def flag(self) -> bool:
        ch = self.byte()
        if ch not in (ord("0"), ord("1")):
            raise DlibFormatError(f"bad bool byte {ch:#x} at offset {self.pos - 1}")
        return ch == ord("1")

    def string(self) -> str:
        size = self.integer()
        text = self.data[self.pos : self.pos + size].decode("ascii")
        self.pos += size
        return text

    def expect(self, *versions: str) -> str:
        at = self.pos
        version = self.string()
        if version not in versions:
            raise DlibFormatError(f"expected {' or '.join(versions)} at offset {at}, found {version!r}")
        return version

    def tensor(self) -> np.ndarray:
        """resizable_tensor: version 2, (num_samples, k, nr, nc), then raw little-endian float32."""
        if (version := self.integer()) != 2:
            raise DlibFormatError(f"resizable_tensor version {version} at offset {self.pos}")
        shape = tuple(self.integer() for _ in range(4))
        count = int(np.prod(shape))
        array = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).reshape(shape)
        self.pos += 4 * count
        return array.astype(np.float32)

    def alias(self) -> tuple[int, ...]:
        if (version := self.integer()) != 1:
            raise DlibFormatError(f"alias_tensor version {version} at offset {self.pos}")
        return tuple(self.integer() for _ in range(4))


# ---------------------------------------------------------------------------------------------
# Layers as read from the file (bottom to top is the order they run in)


def _read_details(r: _Reader, spec: Layer) -> Layer:
    """One layer's `details` (its own serialize), checked against what the architecture says."""
    name = spec.kind
    if name == "con":
        filters, size, stride = spec.filters, spec.window, spec.stride
        r.expect("con_4", "con_5", "con_6")
        params = r.tensor().reshape(-1)
        num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x = (r.integer() for _ in range(7))
        shape, bias_shape = r.alias(), r.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.real()
        if (num_filters, nr, nc, stride_y, stride_x) != (filters, size, size, stride, stride):
            raise DlibFormatError(
                f"con at offset {r.pos}: expected {filters} filters {size}x{size} stride {stride}, found "
                f"{num_filters} filters {nr}x{nc} stride {stride_y}x{stride_x}"
            )
        weight_count = int(np.prod(shape))
        weight = params[:weight_count].reshape(shape)
        bias = params[weight_count : weight_count + int(np.prod(bias_shape))].reshape(-1)
        return replace(spec, padding=pad_y, arrays={"weight": weight, "bias": bias})
    if name == "affine":
        r.expect("affine_")
        params = r.tensor().reshape(-1)
        gamma, beta = r.alias(), r.alias()
        r.integer()  # layer mode (CONV_MODE: one scale and shift per channel)
        channels = gamma[1]
        if gamma != (1, channels, 1, 1) or beta != gamma:  # CONV_MODE: (1, C, 1, 1)
            raise DlibFormatError(f"affine at offset {r.pos}: gamma {gamma} and beta {beta}, not per channel")
        return replace(spec, arrays={"scale": params[:channels], "shift": params[channels : 2 * channels]})
    if name == "relu":
        r.expect("relu_")
        return spec
    if name in ("max_pool", "avg_pool"):
        window, stride = spec.window, spec.stride
        r.expect(f"{name}_2")
        nr, nc, stride_y, stride_x, pad_y, pad_x = (r.integer() for _ in range(6))
        if (nr, nc, stride_y, stride_x) != (window, window, stride, stride) or pad_y != pad_x:
            raise DlibFormatError(f"{name} at offset {r.pos}: found {nr}x{nc} stride {stride_y}x{stride_x}")
        return replace(spec, padding=pad_y)
    if name == "add_prev":
        r.expect("add_prev_")
        return spec
    if name == "fc":
        r.expect("fc_2", "fc_3")
        num_outputs, num_inputs = r.integer(), r.integer()
        params = r.tensor().reshape(-1)
        weights, _biases = r.alias(), r.alias()
        if r.integer() != 1:  # fc_no_bias
            raise DlibFormatError(f"fc at offset {r.pos}: expected fc_no_bias")
        for _ in range(4):
            r.real()
        if weights[:2] != (num_inputs, num_outputs) or num_outputs != spec.filters:
            raise DlibFormatError(f"fc at offset {r.pos}: weights {weights}, outputs {num_outputs}")
        # dlib computes input (N x in) @ W (in x out), as ONNX's MatMul does: kept in that layout.
        matrix = params[: num_inputs * num_outputs].reshape(num_inputs, num_outputs)
        return replace(spec, arrays={"weight": matrix})
    raise DlibFormatError(f"unknown layer {name!r}")


def _read_add_layer_state(r: _Reader, version: int, over_input: bool) -> None:
    """What add_layer writes after its details: flags and (empty, training-only) tensors."""
    # this_layer_setup_called, gradient_input_is_stale, get_output_and_gradient_input_disabled
    for _ in range(3):
        r.flag()
    r.tensor()  # x_grad
    r.tensor()  # cached_output
    if over_input:
        r.tensor()  # grad_final
        if version >= 3:
            r.integer()  # _sample_expansion_factor
    elif version >= 2:
        r.tensor()  # params_grad


@dataclass(frozen=True)
class DlibNetwork:
    """The parsed network: input means and the layers in the order they run (input first)."""

    mean_rgb: tuple[float, float, float]
    layers: list[Layer]


def read_dlib_network(path: str | Path) -> DlibNetwork:
    """Parse dlib_face_recognition_resnet_model_v1.dat (dlib's `anet_type`).

    Any other file, or a truncated one, raises DlibFormatError naming the path and where it broke.
    """
    data = Path(path).read_bytes()
    try:
        return _read_network(_Reader(data))
    except DlibFormatError as error:
        raise DlibFormatError(f"{path}: {error}") from error
    except (IndexError, ValueError, UnicodeDecodeError) as error:  # ran off the end, or not dlib's format
        raise DlibFormatError(f"{path} is not dlib's face-recognition ResNet ({error})") from error


def _read_network(r: _Reader) -> DlibNetwork:
    if (version := r.integer()) != 1:
        raise DlibFormatError(f"add_loss_layer version {version}, expected 1")
    r.expect("loss_metric_2")
    r.real(), r.real()  # margin, distance threshold: training only
    arch = _architecture()
    versions = []
    for index, spec in enumerate(arch):  # each wrapper's version, top-down
        version = r.integer()
        bottom = index == len(arch) - 1  # the add_layer over the input layer has its own versions
        expected = (1,) if spec.kind in ("tag", "skip") else (2, 3) if bottom else (1, 2)
        if version not in expected:
            raise DlibFormatError(
                f"{spec.kind} #{index} has version {version} at offset {r.pos}, expected {expected}"
            )
        versions.append(version)
    r.expect("input_rgb_image_sized")
    mean_rgb = (r.real(), r.real(), r.real())
    if (r.integer(), r.integer()) != (CHIP_SIZE, CHIP_SIZE):
        raise DlibFormatError(f"input layer is not {CHIP_SIZE}x{CHIP_SIZE}")
    layers = []
    for index in range(len(arch) - 1, -1, -1):  # details and state, bottom-up
        spec = arch[index]
        if spec.kind in ("tag", "skip"):
            layers.append(spec)
            continue
        layers.append(_read_details(r, spec))
        _read_add_layer_state(r, versions[index], over_input=index == len(arch) - 1)
    if r.pos != len(r.data):
        raise DlibFormatError(f"{len(r.data) - r.pos} bytes left after the network")
    return DlibNetwork(mean_rgb=mean_rgb, layers=layers)
