"""The flow-matching objective of diffusers' SD3/Wan training examples, weighted per latent token.

As in examples/dreambooth/train_dreambooth_lora_sd3.py (and the Wan trainers built on it): a timestep
index drawn from `compute_density_for_timestep_sampling` (logit-normal by default), its sigma from the
base model's FlowMatchEulerDiscreteScheduler (with the model's shift, 1000 training timesteps),
x_t = (1 - sigma) * x_0 + sigma * noise, the transformer predicts the velocity, target = noise - x_0, and
the squared error is weighted by `compute_loss_weighting_for_sd3`. On top, each latent element carries
its token's contact weight (kiss_core.training.masks). The loss is the plain mean of the weighted
errors (not divided by the mean weight), so raising the contact weight changes the gradient only at
contact tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from kiss_core.training.config import TrainConfig


@dataclass
class Batch:
    """One step's inputs on the worker's device, batch first."""

    latents: torch.Tensor  # (B, 16, T, h, w)
    prompt_embeds: torch.Tensor  # (B, L, text_dim)
    mask: torch.Tensor  # (B, T, h/2, w/2) contact tokens, 0/1
    condition: torch.Tensor | None = None  # I2V: (B, 20, T, h, w)
    image_embeds: torch.Tensor | None = None  # image-conditioned I2V: (B, 257, image_dim)
    control: torch.Tensor | None = None  # VACE: (B, 96, T, h, w)


def stack_samples(samples: list[dict[str, torch.Tensor]], device: torch.device, dtype: torch.dtype) -> Batch:
    """Records from the cache (each batch-1) as one Batch; latents stay float32, model inputs in `dtype`."""

    def cat(name: str, to: torch.dtype) -> torch.Tensor | None:
        if name not in samples[0]:
            return None
        return torch.cat([s[name] for s in samples]).to(device=device, dtype=to)

    mask = torch.stack([s["mask"] for s in samples]).to(device)
    latents, prompt = cat("latents", torch.float32), cat("prompt_embeds", dtype)
    assert latents is not None and prompt is not None
    return Batch(
        latents=latents,
        prompt_embeds=prompt,
        mask=mask,
        condition=cat("condition", dtype),
        image_embeds=cat("image_embeds", dtype),
        control=cat("control", dtype),
    )


def training_scheduler(scheduler_config: dict[str, Any]) -> Any:
    """FlowMatchEulerDiscreteScheduler with the base model's shift and training timesteps.

    The Wan Diffusers checkpoints ship UniPCMultistepScheduler (shift as `flow_shift`), the tiny test
    models FlowMatchEulerDiscreteScheduler (`shift`); either way the training sigmas are the flow-matching
    ones with that shift, as the inference schedule uses it.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    shift = scheduler_config.get("shift", scheduler_config.get("flow_shift")) or 1.0
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=int(scheduler_config.get("num_train_timesteps", 1000)), shift=float(shift)
    )


def sample_timesteps(
    scheduler: Any, config: TrainConfig, batch: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps, sigmas) for a batch, drawn as diffusers' flow-matching examples draw them."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    u = compute_density_for_timestep_sampling(
        weighting_scheme=config.weighting_scheme,
        batch_size=batch,
        logit_mean=config.logit_mean,
        logit_std=config.logit_std,
        mode_scale=config.mode_scale,
        generator=generator,
    )
    indices = (u * scheduler.config.num_train_timesteps).long().clamp(0, len(scheduler.timesteps) - 1)
    return scheduler.timesteps[indices], scheduler.sigmas[indices]


def token_weights(mask: torch.Tensor, contact_weight: float, patch: tuple[int, int]) -> torch.Tensor:
    """(B, 1, T, h, w) per-latent-element weights: 1 + (contact_weight - 1) * the token's mask."""
    weights = 1.0 + (contact_weight - 1.0) * mask
    weights = weights.repeat_interleave(patch[0], dim=2).repeat_interleave(patch[1], dim=3)
    return weights[:, None]


def predict(transformer: Any, batch: Batch, noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """The transformer's velocity prediction for the noisy latents (I2V: with the condition channels)."""
    inputs: dict[str, Any] = {}
    hidden = noisy
    if batch.condition is not None:
        hidden = torch.cat([noisy, batch.condition], dim=1)
    if batch.image_embeds is not None:
        inputs["encoder_hidden_states_image"] = batch.image_embeds
    if batch.control is not None:
        layers = len(_config(transformer).vace_layers)
        inputs["control_hidden_states"] = batch.control
        inputs["control_hidden_states_scale"] = torch.ones(layers, device=noisy.device, dtype=noisy.dtype)
    return transformer(
        hidden_states=hidden,
        timestep=timesteps,
        encoder_hidden_states=batch.prompt_embeds,
        return_dict=False,
        **inputs,
    )[0]


def _config(transformer: Any) -> Any:
    return getattr(transformer, "module", transformer).config  # DDP wraps the model


@dataclass
class StepOutput:
    loss: torch.Tensor
    prediction: torch.Tensor  # kept for the tests' per-token gradient check
    sigmas: torch.Tensor


def flow_matching_loss(
    transformer: Any,
    scheduler: Any,
    batch: Batch,
    config: TrainConfig,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> StepOutput:
    """The weighted flow-matching loss of one batch (noise and timesteps from `generator`, on CPU)."""
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    x0 = batch.latents
    size = x0.shape[0]
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device)
    timesteps, sigmas = sample_timesteps(scheduler, config, size, generator)
    timesteps, sigmas = timesteps.to(x0.device), sigmas.to(x0.device)
    sigma = sigmas.view(size, 1, 1, 1, 1)
    noisy = (1.0 - sigma) * x0 + sigma * noise
    prediction = predict(transformer, batch, noisy.to(dtype), timesteps)
    target = noise - x0
    patch = tuple(_config(transformer).patch_size[1:])
    weights = compute_loss_weighting_for_sd3(config.weighting_scheme, sigmas=sigma) * token_weights(
        batch.mask, config.contact_weight, (int(patch[0]), int(patch[1]))
    )
    loss = (weights * (prediction.float() - target) ** 2).reshape(size, -1).mean(dim=1).mean()
    return StepOutput(loss, prediction, sigmas)
