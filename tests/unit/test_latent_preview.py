"""The latent-to-RGB projection of the progress preview (kiss_core.generation.latent_preview).

The fit runs on the suite's tiny random-weight Wan VAE (tests.support.tiny_wan: the real diffusers
AutoencoderKLWan, whose random latents carry little colour) and on a linear stand-in VAE whose
latent is a known linear map of the colour each latent cell covers: there the fit must recover the
colours, which checks the normalisation and the latent-grid alignment a random VAE cannot.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from kiss_core.generation.latent_preview import (
    LatentRgbProjection,
    fit_latent_rgb,
    latent_to_rgb,
    middle_frame,
    preview_image,
    synthetic_clips,
)
from tests.support.tiny_wan import _vae

CPU = torch.device("cpu")
# Flat colours (-1..1) none of which is a patch colour of the fit's clips.
FLAT = np.array(
    [
        [0.9, -0.8, -0.7],
        [-0.6, 0.8, -0.5],
        [-0.7, -0.4, 0.9],
        [0.7, 0.7, 0.6],
        [-0.9, -0.85, -0.8],
        [0.6, 0.1, -0.3],
    ],
    dtype=np.float32,
)


def _normalised(vae: Any, rgb: np.ndarray) -> np.ndarray:
    """The latent the sampler sees for the clips `rgb`: the VAE's mean, normalised as the Wan pipelines do."""
    with torch.inference_mode():
        latent = vae.encode(torch.from_numpy(rgb)).latent_dist.mean.numpy()
    shape = (1, -1, 1, 1, 1)
    mean = np.asarray(vae.config.latents_mean).reshape(shape)
    std = np.asarray(vae.config.latents_std).reshape(shape)
    return ((latent - mean) / std).astype(np.float32)


def _flat_clips(frames: int, size: int) -> np.ndarray:
    return np.ascontiguousarray(
        np.broadcast_to(FLAT[:, :, None, None, None], (len(FLAT), 3, frames, size, size))
    )


class LinearVae(torch.nn.Module):
    """A stand-in VAE: each latent cell is `mix @ colour + offset`, the colour averaged over the pixels the
    cell covers (the first frame alone, then every `temporal` frames; `spatial` x `spatial` pixels), as a
    causal Wan VAE's cells cover them; with a config like AutoencoderKLWan's."""

    def __init__(self, channels: int, temporal: int, spatial: int) -> None:
        super().__init__()
        rng = np.random.default_rng(channels)
        self.temporal, self.spatial = temporal, spatial
        self.config = SimpleNamespace(
            z_dim=channels,
            scale_factor_temporal=temporal,
            scale_factor_spatial=spatial,
            latents_mean=rng.normal(0, 0.5, channels).tolist(),
            latents_std=rng.uniform(0.5, 3.0, channels).tolist(),
        )
        self.mix = torch.from_numpy(rng.normal(0, 1, (channels, 3)).astype(np.float32))
        self.offset = torch.from_numpy(rng.normal(0, 1, channels).astype(np.float32))

    def encode(self, x: torch.Tensor) -> Any:
        t, s = self.temporal, self.spatial
        b, c, f, h, w = x.shape
        rest = x[:, :, 1:].reshape(b, c, (f - 1) // t, t, h, w).mean(dim=3)
        cells = torch.nn.functional.avg_pool3d(torch.cat([x[:, :, :1], rest], dim=2), (1, s, s))
        latent = torch.einsum("kc,bcfhw->bkfhw", self.mix, cells) + self.offset.view(1, -1, 1, 1, 1)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=latent))


@pytest.fixture(scope="module")
def tiny_vae() -> Any:
    return _vae()


@pytest.fixture(scope="module")
def tiny_projection(tiny_vae: Any) -> LatentRgbProjection:
    return fit_latent_rgb(tiny_vae, CPU, torch.float32)


def test_the_fit_clips_are_deterministic_and_span_the_rgb_cube() -> None:
    clips = synthetic_clips()
    assert clips.shape == (4, 3, 9, 128, 128) and clips.dtype == np.float32
    assert np.array_equal(clips, synthetic_clips())
    assert clips.min() == -1.0 and clips.max() == 1.0
    pixels = clips.transpose(0, 2, 3, 4, 1).reshape(-1, 3)
    for corner in np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).T.reshape(-1, 3):
        assert (np.abs(pixels - corner).max(axis=1) < 0.05).any(), f"no pixel near the cube's corner {corner}"


def test_the_tiny_wan_vae_fit_is_finite_and_explains_some_of_the_colour(
    tiny_vae: Any, tiny_projection: LatentRgbProjection
) -> None:
    projection = tiny_projection
    assert projection.factors.shape == (16, 3) and projection.bias.shape == (3,)
    assert projection.channels == tiny_vae.config.z_dim
    assert np.isfinite(projection.factors).all() and np.isfinite(projection.bias).all()
    # The random VAE's latents carry little colour, but the fit beats the bias alone (the targets' mean).
    assert 0 < projection.residual_rms < projection.target_rms
    again = fit_latent_rgb(tiny_vae, CPU, torch.float32)
    assert np.allclose(again.factors, projection.factors, atol=1e-5), "the same VAE fits the same map"


def test_the_tiny_wan_projection_previews_the_latent_a_job_denoises(
    tiny_vae: Any, tiny_projection: LatentRgbProjection
) -> None:
    latents = _normalised(tiny_vae, _flat_clips(frames=5, size=64))  # (6, 16, 2, 8, 8)
    preview = preview_image(middle_frame(latents), tiny_projection, scale=2)
    assert preview.shape == (16, 16, 3) and preview.dtype == np.uint8
    assert np.array_equal(preview, preview_image(middle_frame(latents.copy()), tiny_projection, scale=2))


@pytest.mark.parametrize(("channels", "temporal", "spatial"), [(16, 4, 8), (48, 4, 16)])
def test_the_fit_recovers_flat_colours_from_a_vae_that_encodes_them(
    channels: int, temporal: int, spatial: int
) -> None:
    """A VAE whose latent is linear in colour (Wan 2.1-shaped; Wan 2.2 5B-shaped: 48 channels, 16 px cells):
    the fit is exact, and a flat colour's normalised latent projects back to that colour, much closer than
    the zero projection (mid grey) or the projection's bias alone."""
    vae = LinearVae(channels, temporal, spatial)
    projection = fit_latent_rgb(vae, CPU, torch.float32)
    assert projection.factors.shape == (channels, 3)
    assert projection.residual_rms < 1e-4 < projection.target_rms
    latents = _normalised(vae, _flat_clips(frames=5, size=4 * spatial))
    for colour, latent in zip(FLAT, latents[:, :, 1], strict=True):
        mean = latent_to_rgb(latent, projection).reshape(-1, 3).mean(axis=0) / 127.5 - 1
        error = np.abs(mean - colour).max()
        assert error < 0.01, f"{colour} previewed as {mean}"
        bias_only = np.abs((projection.bias.clip(-1, 1)) - colour).max()
        assert error < bias_only / 10 and error < np.abs(colour).max() / 10


def test_a_constant_latent_projects_to_one_colour(tiny_projection: LatentRgbProjection) -> None:
    latent = np.zeros((16, 6, 8), np.float32)
    latent[2] = 1.0  # channel 2 alone: its factor row plus the bias
    rgb = latent_to_rgb(latent, tiny_projection)
    assert (rgb == rgb[0, 0]).all(), "constant in, constant out"
    expected = np.clip((tiny_projection.factors[2] + tiny_projection.bias + 1) * 127.5, 0, 255).round()
    assert rgb[0, 0].tolist() == expected.astype(np.uint8).tolist()
    bias = np.clip((tiny_projection.bias + 1) * 127.5, 0, 255).round().astype(np.uint8)
    assert latent_to_rgb(np.zeros((16, 2, 2), np.float32), tiny_projection)[0, 0].tolist() == bias.tolist()


def test_middle_frame_and_a_wrong_channel_count(tiny_projection: LatentRgbProjection) -> None:
    latents = np.arange(1 * 16 * 5 * 2 * 2, dtype=np.float32).reshape(1, 16, 5, 2, 2)
    assert np.array_equal(middle_frame(latents), latents[0, :, 2])
    with pytest.raises(ValueError, match="48 latent channels, the projection maps 16"):
        latent_to_rgb(np.zeros((48, 4, 4), np.float32), tiny_projection)
    with pytest.raises(ValueError):
        latent_to_rgb(np.zeros((16, 4), np.float32), tiny_projection)
    with pytest.raises(ValueError):
        middle_frame(np.zeros((16, 4, 4), np.float32))
    with pytest.raises(ValueError):
        LatentRgbProjection(factors=np.zeros((16, 4), np.float32), bias=np.zeros(3, np.float32))


def test_a_vae_whose_latent_grid_does_not_match_its_scale_factors_is_refused() -> None:
    vae = LinearVae(16, 4, 8)
    vae.config.scale_factor_spatial = 16  # the latent has 8 px cells, the config claims 16
    with pytest.raises(ValueError, match="grid"):
        fit_latent_rgb(vae, CPU, torch.float32)
