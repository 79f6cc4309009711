"""The latent-to-RGB projection of the progress preview (kiss_core.generation.latent_preview)."""

from __future__ import annotations

import numpy as np
import pytest

from kiss_core.generation.latent_preview import (
    WAN21_RGB_BIAS,
    WAN21_RGB_FACTORS,
    can_preview,
    latent_to_rgb,
    middle_frame,
    preview_image,
)


def test_projection_has_the_latent_grid_and_is_uint8_rgb() -> None:
    latent = np.random.default_rng(0).standard_normal((16, 30, 52)).astype(np.float32)
    rgb = latent_to_rgb(latent)
    assert rgb.shape == (30, 52, 3) and rgb.dtype == np.uint8
    assert preview_image(latent, scale=2).shape == (60, 104, 3)
    assert np.array_equal(rgb, latent_to_rgb(latent.copy())), "deterministic"


def test_a_constant_latent_projects_to_one_colour_the_factors_give() -> None:
    latent = np.zeros((16, 6, 8), np.float32)
    latent[2] = 1.0  # channel 2 alone: its factor row plus the bias
    rgb = latent_to_rgb(latent)
    assert (rgb == rgb[0, 0]).all(), "constant in, constant out"
    expected = np.clip((WAN21_RGB_FACTORS[2] + WAN21_RGB_BIAS + 1) * 127.5, 0, 255).round()
    assert rgb[0, 0].tolist() == expected.astype(np.uint8).tolist()
    # Zero latent: the bias alone.
    bias = np.clip((WAN21_RGB_BIAS + 1) * 127.5, 0, 255).round().astype(np.uint8)
    assert latent_to_rgb(np.zeros((16, 2, 2), np.float32))[0, 0].tolist() == bias.tolist()


def test_middle_frame_and_channel_counts_without_factors() -> None:
    latents = np.arange(1 * 16 * 5 * 2 * 2, dtype=np.float32).reshape(1, 16, 5, 2, 2)
    assert np.array_equal(middle_frame(latents), latents[0, :, 2])
    assert can_preview(16) and not can_preview(48)
    with pytest.raises(ValueError):
        latent_to_rgb(np.zeros((48, 4, 4), np.float32))
    with pytest.raises(ValueError):
        middle_frame(np.zeros((16, 4, 4), np.float32))
