"""The inference-time attention bias toward the lip tokens, as a diffusers attention processor.

`LipAttentionBias` replaces Wan's `WanAttnProcessor` on each block's self-attention (`attn1`). Every
query gets `weight` added to its attention logits on the key tokens that hold lips (from the plan's
landmarks, mapped to the token grid like the training masks), so more of each token's attention goes to
the mouths; cross-attention (text, image) is left alone. The output itself is computed by diffusers'
processor with the bias as its additive `attention_mask`, so with `weight` 0 the processor calls it
exactly as the plain one does (no mask) and the output is bit-identical.

An additive mask needs an attention backend that takes one (PyTorch SDPA, diffusers' default "native");
flash-attention backends do not. Off by default: the generator setting that turns it on, and its wiring
into the Wan backends, are requested from the lead (/work/ml_requests.md): `plan_lip_tokens(native plan,
frames generated)` and `lip_attention(transformer, tokens, weight)` around the pipeline call are the hook.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor, _get_qkv_projections

from kiss_core.scene.choreography import KissPlan
from kiss_core.training.masks import lip_masks, token_mask


def lip_tokens(landmarks: np.ndarray, width: int, height: int, dilation: float = 0.1) -> torch.Tensor:
    """(N,) float 0/1 over the transformer's tokens in its order (latent frame, row, column), from
    (F, P, 68, 2) landmarks of a 4k+1-frame video at width x height."""
    return torch.from_numpy(token_mask(lip_masks(landmarks, width, height, dilation)).reshape(-1))


def plan_lip_tokens(plan: KissPlan, frames: int, dilation: float = 0.1) -> torch.Tensor:
    """`lip_tokens` of a kiss plan rendered as `frames` frames (Wan's 4k+1 >= the plan's frame count: the
    tail holds the last pose, as the backends pad it) at the plan's size."""
    landmarks = np.stack([plan.tracks["a"].landmarks, plan.tracks["b"].landmarks], axis=1)[:frames]
    if len(landmarks) < frames:
        landmarks = np.concatenate([landmarks, np.repeat(landmarks[-1:], frames - len(landmarks), axis=0)])
    return lip_tokens(landmarks, plan.width, plan.height, dilation)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's rotary embedding as WanAttnProcessor applies it (interleaved pairs)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos[..., 0::2] - x2 * sin[..., 1::2]
    out[..., 1::2] = x1 * sin[..., 1::2] + x2 * cos[..., 0::2]
    return out.type_as(x)


def attention_probabilities(
    attn: Any, hidden_states: torch.Tensor, rotary_emb: Any, bias: torch.Tensor | None
) -> torch.Tensor:
    """(B, heads, N, N) softmax of a self-attention's logits (+ bias), as WanAttnProcessor forms them."""
    query, key, _ = _get_qkv_projections(attn, hidden_states, hidden_states)  # self-attention
    query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
    key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
    if rotary_emb is not None:
        query, key = _rotate(query, *rotary_emb), _rotate(key, *rotary_emb)
    query, key = query.transpose(1, 2).float(), key.transpose(1, 2).float()
    logits = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
    if bias is not None:
        logits = logits + bias.float()
    return logits.softmax(dim=-1)


class LipAttentionBias(WanAttnProcessor):
    """WanAttnProcessor with `weight` added to the self-attention logits of the lip key tokens.

    `record`: also keep `lip_mass`, the mean share of attention the queries give the lip tokens (the full
    N x N probabilities: for tests and diagnostics on small inputs only).
    """

    def __init__(self, tokens: torch.Tensor, weight: float, record: bool = False):
        super().__init__()
        self.tokens = tokens
        self.weight = float(weight)
        self.record = record
        self.lip_mass: float | None = None

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or (self.weight == 0.0 and not self.record):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        if self.tokens.numel() != hidden_states.shape[1]:
            raise ValueError(
                f"the lip token mask has {self.tokens.numel()} tokens but the self-attention sees"
                f" {hidden_states.shape[1]}: build it for this video's size and frame count"
            )
        bias = None
        if self.weight != 0.0:
            bias = (self.weight * self.tokens).to(hidden_states.device, hidden_states.dtype).view(1, 1, 1, -1)
        if self.record:
            with torch.no_grad():
                probs = attention_probabilities(attn, hidden_states, rotary_emb, bias)
                lips = self.tokens.to(probs.device) > 0
                self.lip_mass = float(probs[..., lips].sum(dim=-1).mean())
        return super().__call__(attn, hidden_states, None, bias, rotary_emb)


@contextlib.contextmanager
def lip_attention(
    transformer: Any, tokens: torch.Tensor, weight: float, record: bool = False
) -> Iterator[list[LipAttentionBias]]:
    """Within the block: every block's self-attention biased toward `tokens`; the processors are restored."""
    blocks = [*transformer.blocks, *getattr(transformer, "vace_blocks", [])]
    previous = [block.attn1.processor for block in blocks]
    processors = [LipAttentionBias(tokens, weight, record) for _ in blocks]
    for block, processor in zip(blocks, processors, strict=True):
        block.attn1.set_processor(processor)
    try:
        yield processors
    finally:
        for block, processor in zip(blocks, previous, strict=True):
            block.attn1.set_processor(processor)
