"""Classifier-free guidance as one batch-2 transformer forward per step instead of two.

diffusers' Wan pipelines run the conditional and the unconditional pass one after the other, so
each step reads all the transformer weights twice and each forward fills the GPU half as well as
it could. Here the pipeline is called *without* guidance (scale 1, no negative prompt: one forward
per step) while hooks on the transformer(s) double the batch on the way in (the negative prompt
embeddings as the second half, every other batched input repeated) and fold the two halves into
`uncond + scale * (cond - uncond)` on the way out: the same arithmetic as the pipeline's, in one call.
The cost is twice the activation memory of a single forward.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

# Transformer inputs with a batch dimension that are the same for both halves. Wan's
# `control_hidden_states_scale` is per VACE layer, not per sample, so it is not among them.
_SHARED_BATCHED = ("hidden_states", "timestep", "encoder_hidden_states_image", "control_hidden_states")


@contextmanager
def batched_guidance(
    transformers: Sequence[torch.nn.Module],
    negative_prompt_embeds: torch.Tensor,
    scale: float | Sequence[float],
) -> Iterator[None]:
    """While open, each call of a transformer runs conditional and unconditional as one batch.

    The caller passes the conditional inputs only (keywords, as the Wan pipelines do); the output
    is the guided noise prediction with the caller's batch size. `scale` is one for all transformers
    or one per transformer (Wan2.2 A14B guides its low-noise expert with `guidance_scale_2`).
    """
    scales = [float(scale)] * len(transformers) if isinstance(scale, int | float) else list(scale)
    if len(scales) != len(transformers):
        raise ValueError(f"`scale` needs one value per transformer ({len(transformers)}) but is {scale}")

    def expand(_: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        if args:
            raise TypeError("batched guidance needs the transformer inputs as keywords")
        kwargs = dict(kwargs)
        for name in _SHARED_BATCHED:
            value = kwargs.get(name)
            if isinstance(value, torch.Tensor):
                kwargs[name] = torch.cat([value, value])
        positive = kwargs["encoder_hidden_states"]
        negative = negative_prompt_embeds.to(positive.device, positive.dtype)
        kwargs["encoder_hidden_states"] = torch.cat([positive, negative.expand_as(positive)])
        return args, kwargs

    def combiner(weight: float) -> Any:
        def combine(_: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
            predicted = output[0] if isinstance(output, tuple) else output.sample
            conditional, unconditional = predicted.chunk(2)
            guided = unconditional + weight * (conditional - unconditional)
            if isinstance(output, tuple):
                return (guided, *output[1:])
            output.sample = guided
            return output

        return combine

    handles = []
    try:
        for transformer, weight in zip(transformers, scales, strict=True):
            handles.append(transformer.register_forward_pre_hook(expand, with_kwargs=True))
            handles.append(transformer.register_forward_hook(combiner(weight), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()
