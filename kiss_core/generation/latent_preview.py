"""A cheap look at a video while it is being denoised: the latent projected to RGB by a fixed linear map.

No VAE decode (seconds and gigabytes on a 14B pipeline): each latent channel contributes a fixed RGB
colour, plus a bias, pixel by pixel, on the latent grid (1/8 of the frame's side), then a small
upscale. Good enough for a person to see the composition and cancel a bad generation early; not a
frame of the video.

The factors for Wan 2.1's VAE (16 latent channels, also the VAE of Wan 2.2 A14B) are ComfyUI's,
comfy/latent_formats.py, class Wan21 (`latent_rgb_factors`, `latent_rgb_factors_bias`; GPL-3.0
project, numbers fitted by its authors; read at commit 040a3243468ecefd1f2802592d90458f1ce4d65f).
They apply to the normalised latents the sampler works on (diffusers' Wan pipelines denoise in that
space too). A latent with another channel count (Wan 2.2 5B's 48) has no factors here: no preview.
"""

from __future__ import annotations

import numpy as np

# Rows: latent channel 0..15; columns: R, G, B.
WAN21_RGB_FACTORS = np.array(
    [
        [-0.1299, -0.1692, 0.2932],
        [0.0671, 0.0406, 0.0442],
        [0.3568, 0.2548, 0.1747],
        [0.0372, 0.2344, 0.1420],
        [0.0313, 0.0189, -0.0328],
        [0.0296, -0.0956, -0.0665],
        [-0.3477, -0.4059, -0.2925],
        [0.0166, 0.1902, 0.1975],
        [-0.0412, 0.0267, -0.1364],
        [-0.1293, 0.0740, 0.1636],
        [0.0680, 0.3019, 0.1128],
        [0.0032, 0.0581, 0.0639],
        [-0.1251, 0.0927, 0.1699],
        [0.0060, -0.0633, 0.0005],
        [0.3477, 0.2275, 0.2950],
        [0.1984, 0.0913, 0.1861],
    ],
    dtype=np.float32,
)
WAN21_RGB_BIAS = np.array([-0.1835, -0.0868, -0.3360], dtype=np.float32)

FACTORS: dict[int, tuple[np.ndarray, np.ndarray]] = {16: (WAN21_RGB_FACTORS, WAN21_RGB_BIAS)}


def can_preview(channels: int) -> bool:
    return channels in FACTORS


def latent_to_rgb(latent: np.ndarray) -> np.ndarray:
    """One latent frame (channels, height, width) to uint8 RGB (height, width, 3), values in -1..1 -> 0..255.

    Raises ValueError for a channel count without factors (check `can_preview` first)."""
    if latent.ndim != 3:
        raise ValueError(f"a latent frame is (channels, height, width), got shape {latent.shape}")
    channels = latent.shape[0]
    if channels not in FACTORS:
        raise ValueError(f"no latent-to-RGB factors for {channels} latent channels")
    factors, bias = FACTORS[channels]
    rgb = np.einsum("chw,cr->hwr", latent.astype(np.float32, copy=False), factors) + bias
    return np.clip((rgb + 1.0) * 127.5, 0, 255).round().astype(np.uint8)


def middle_frame(latents: np.ndarray) -> np.ndarray:
    """The middle latent frame of a video latent (batch, channels, frames, height, width), batch item 0."""
    if latents.ndim != 5:
        raise ValueError(f"a video latent is (batch, channels, frames, height, width), got {latents.shape}")
    return latents[0, :, latents.shape[2] // 2]


def preview_image(latent: np.ndarray, scale: int = 2) -> np.ndarray:
    """The RGB preview of one latent frame, `scale` times the latent grid (nearest neighbour: cheap, and
    honest about how coarse it is)."""
    rgb = latent_to_rgb(latent)
    if scale > 1:
        rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    return np.ascontiguousarray(rgb)
