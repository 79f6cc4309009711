"""A cheap look at a video while it is being denoised: the latent projected to RGB by a linear map.

No VAE decode (seconds and gigabytes on a 14B pipeline): each latent channel contributes an RGB
colour, plus a bias, pixel by pixel, on the latent grid (1/8 or 1/16 of the frame's side), then a
small upscale. Good enough for a person to see the composition and cancel a bad generation early;
not a frame of the video.

The map is fitted from the pipeline's own VAE when the backend loads (`fit_latent_rgb`): a fixed set
of synthetic clips (colour gradients and flat patches spanning the RGB cube) is encoded once, and a
least-squares fit maps each latent cell to the mean colour of the pixels it covers. So no numbers are
copied from elsewhere, and every VAE gets its own map whatever its channel count (Wan 2.1's 16, also
the VAE of Wan 2.2 A14B; Wan 2.2 5B's 48; the tests' tiny random VAE). The fit is in the normalised
space the sampler denoises in, `(latent - latents_mean) / latents_std` with the VAE config's
statistics (as diffusers' Wan pipelines normalise), which is what the step callback sees.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatentRgbProjection:
    """latent (channels,) -> RGB (3,) in -1..1: `latent @ factors + bias`."""

    factors: np.ndarray  # (channels, 3) float32
    bias: np.ndarray  # (3,) float32
    residual_rms: float = 0.0  # the fit's RMS error on its clips, RGB units (-1..1)
    target_rms: float = 0.0  # the RMS of those targets about their mean colour: the bias-only error

    def __post_init__(self) -> None:
        if self.factors.ndim != 2 or self.factors.shape[1] != 3 or self.bias.shape != (3,):
            raise ValueError(
                f"factors are (channels, 3) and bias (3,), got {self.factors.shape}, {self.bias.shape}"
            )

    @property
    def channels(self) -> int:
        return int(self.factors.shape[0])


# The colours of the flat patches: the RGB cube's corners and centre, greys, and a few skin, hair and
# fabric tones (0..1), 4x4 patches per clip.
_PATCH_COLOURS = np.array(
    [
        [0, 0, 0],
        [1, 1, 1],
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1],
        [1, 1, 0],
        [1, 0, 1],
        [0, 1, 1],
        [0.5, 0.5, 0.5],
        [0.25, 0.25, 0.25],
        [0.75, 0.75, 0.75],
        [0.92, 0.76, 0.65],
        [0.78, 0.57, 0.44],
        [0.55, 0.37, 0.26],
        [0.33, 0.2, 0.13],
        [0.2, 0.15, 0.12],
        [1, 0.5, 0],
        [0.5, 0, 1],
        [0, 0.5, 0.5],
        [0.5, 1, 0],
        [1, 0, 0.5],
        [0, 0.5, 1],
        [0.6, 0.3, 0.3],
        [0.3, 0.6, 0.3],
        [0.3, 0.3, 0.6],
        [0.85, 0.85, 0.6],
        [0.6, 0.85, 0.85],
        [0.85, 0.6, 0.85],
        [0.1, 0.1, 0.3],
        [0.4, 0.2, 0.5],
        [0.95, 0.9, 0.8],
        [0.45, 0.5, 0.55],
    ],
    dtype=np.float32,
)


def synthetic_clips(frames: int = 9, size: int = 128) -> np.ndarray:
    """The fit's clips, (clips, 3, frames, size, size) float32 in -1..1, the same every call.

    0: the RGB cube swept: red along x, green along y, blue rising over the frames. 1: hue along x,
    brightness down y, saturation falling over the frames. 2 and 3: 4x4 flat patches of
    `_PATCH_COLOURS`, rolled by a quarter patch per frame on one, still on the other."""
    t = np.linspace(0.0, 1.0, frames, dtype=np.float32)[:, None, None]
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    x, y = ramp[None, None, :], ramp[None, :, None]
    cube = np.stack(np.broadcast_arrays(x, y, t), axis=0)  # (3, frames, size, size)

    hue, value, saturation = x, 1.0 - 0.85 * y, 1.0 - 0.7 * t
    # HSV to RGB: channel n's is v - v s clip(min(k, 4 - k), 0, 1), k = (n + 6 h) mod 6, n = 5, 3, 1.
    wheel = np.stack(
        [
            value - value * saturation * np.clip(np.minimum(k, 4 - k), 0, 1)
            for k in ((n + 6 * hue) % 6 for n in (5, 3, 1))
        ]
    )

    cell = size // 4
    grid = np.arange(size) // cell
    patches = []
    for half in (0, 1):
        colours = _PATCH_COLOURS[16 * half : 16 * (half + 1)]
        image = colours[grid[:, None] * 4 + grid[None, :]]  # (size, size, 3)
        shifts = (np.arange(frames) * (cell // 4)) if half == 0 else np.zeros(frames, int)
        video = np.stack([np.roll(image, int(s), axis=1) for s in shifts])  # (frames, size, size, 3)
        patches.append(video.transpose(3, 0, 1, 2))
    clips = np.stack([cube, wheel, *patches]).astype(np.float32)
    return clips * 2.0 - 1.0


def _latent_grid(rgb: np.ndarray, temporal: int, spatial: int) -> np.ndarray:
    """RGB clips (clips, 3, frames, H, W) averaged over what each latent cell covers: the first frame alone
    (Wan's causal VAE encodes it by itself), then each `temporal` frames; `spatial` x `spatial` pixels."""
    b, c, f, h, w = rgb.shape
    if (f - 1) % temporal or h % spatial or w % spatial:
        raise ValueError(f"clips of {f} frames at {h}x{w} do not fit a {temporal}x{spatial} latent grid")
    rest = rgb[:, :, 1:].reshape(b, c, (f - 1) // temporal, temporal, h, w).mean(axis=3)
    frames = np.concatenate([rgb[:, :, :1], rest], axis=2)
    return frames.reshape(b, c, frames.shape[2], h // spatial, spatial, w // spatial, spatial).mean(
        axis=(4, 6)
    )


def _vae_statistics(config: Any, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """latents_mean and latents_std from the VAE config (zeros and ones where it has none)."""
    mean = getattr(config, "latents_mean", None)
    std = getattr(config, "latents_std", None)
    mean_arr = np.zeros(channels) if mean is None else np.asarray(mean, dtype=np.float64)
    std_arr = np.ones(channels) if std is None else np.asarray(std, dtype=np.float64)
    if mean_arr.shape != (channels,) or std_arr.shape != (channels,):
        raise ValueError(f"the VAE's latents_mean/latents_std do not have its {channels} channels")
    return mean_arr, std_arr


def fit_latent_rgb(
    vae: Any, device: Any, dtype: Any, frames: int = 9, size: int = 128
) -> LatentRgbProjection:
    """The least-squares map from `vae`'s normalised latents to RGB, from one encode of `synthetic_clips`.

    `vae` is a diffusers AutoencoderKLWan (or anything with its `encode(x).latent_dist.mean` and config:
    `latents_mean`, `latents_std`, `scale_factor_temporal`, `scale_factor_spatial`); the clips go to
    `device` as `dtype` (the VAE's own). Raises ValueError when the latent does not have the grid the
    config's scale factors give."""
    import torch

    started = time.perf_counter()
    config = vae.config
    temporal = int(getattr(config, "scale_factor_temporal", 4) or 4)
    spatial = int(getattr(config, "scale_factor_spatial", 8) or 8)
    rgb = synthetic_clips(frames, size)
    with torch.inference_mode():
        x = torch.from_numpy(rgb).to(device=device, dtype=dtype)
        latent = vae.encode(x).latent_dist.mean.float().cpu().numpy().astype(np.float64)
    target = _latent_grid(rgb.astype(np.float64), temporal, spatial)
    if latent.shape[0] != target.shape[0] or latent.shape[2:] != target.shape[2:]:
        raise ValueError(f"the VAE encoded {rgb.shape} to {latent.shape}, expected a {target.shape[2:]} grid")
    channels = latent.shape[1]
    mean, std = _vae_statistics(config, channels)
    normalised = (latent - mean[None, :, None, None, None]) / std[None, :, None, None, None]

    inputs = normalised.transpose(0, 2, 3, 4, 1).reshape(-1, channels)
    targets = target.transpose(0, 2, 3, 4, 1).reshape(-1, 3)
    design = np.concatenate([inputs, np.ones((len(inputs), 1))], axis=1)
    solution, *_ = np.linalg.lstsq(design, targets, rcond=None)
    if not np.isfinite(solution).all():
        raise ValueError("the latent-to-RGB fit is not finite")
    residual = float(np.sqrt(np.mean((design @ solution - targets) ** 2)))
    spread = float(np.sqrt(np.mean((targets - targets.mean(axis=0)) ** 2)))
    projection = LatentRgbProjection(
        factors=solution[:channels].astype(np.float32),
        bias=solution[channels].astype(np.float32),
        residual_rms=residual,
        target_rms=spread,
    )
    logger.info(
        "latent preview: fitted %d latent channels to RGB on %d latent cells in %.2f s, residual RMS %.3f"
        " (bias alone %.3f; RGB in -1..1)",
        channels,
        len(inputs),
        time.perf_counter() - started,
        residual,
        spread,
    )
    return projection


def latent_to_rgb(latent: np.ndarray, projection: LatentRgbProjection) -> np.ndarray:
    """One latent frame (channels, height, width) to uint8 RGB (height, width, 3), values in -1..1 -> 0..255.

    Raises ValueError when the latent's channel count is not the projection's."""
    if latent.ndim != 3:
        raise ValueError(f"a latent frame is (channels, height, width), got shape {latent.shape}")
    if latent.shape[0] != projection.channels:
        raise ValueError(f"{latent.shape[0]} latent channels, the projection maps {projection.channels}")
    rgb = (
        np.einsum("chw,cr->hwr", latent.astype(np.float32, copy=False), projection.factors) + projection.bias
    )
    return np.clip((rgb + 1.0) * 127.5, 0, 255).round().astype(np.uint8)


def middle_frame(latents: np.ndarray) -> np.ndarray:
    """The middle latent frame of a video latent (batch, channels, frames, height, width), batch item 0."""
    if latents.ndim != 5:
        raise ValueError(f"a video latent is (batch, channels, frames, height, width), got {latents.shape}")
    return latents[0, :, latents.shape[2] // 2]


def preview_image(latent: np.ndarray, projection: LatentRgbProjection, scale: int = 2) -> np.ndarray:
    """The RGB preview of one latent frame, `scale` times the latent grid (nearest neighbour: cheap, and
    honest about how coarse it is)."""
    rgb = latent_to_rgb(latent, projection)
    if scale > 1:
        rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    return np.ascontiguousarray(rgb)
