"""The inference-time attention bias toward the lip tokens, as a diffusers attention processor.

`LipAttentionBias` replaces Wan's `WanAttnProcessor` on each block's self-attention (`attn1`). Every
query gets `weight` added to its attention logits on the key tokens that hold lips (from the plan's
landmarks, mapped to the token grid like the training masks), so more of each token's attention goes to
the mouths; cross-attention (text, image) is left alone. The output itself is computed by diffusers'
processor with the bias as its additive `attention_mask`, so with `weight` 0 the processor calls it
exactly as the plain one does (no mask) and the output is bit-identical.

An additive mask needs an attention backend that takes one (PyTorch SDPA, diffusers' default "native");
flash-attention, sage and flex backends do not (GeneratorSettings refuses them with the bias on). The
generator setting `lip_attention_bias` (off by default) turns it on
in the Wan backends: `plan_lip_tokens(native plan, frames generated)` and `lip_attention(transformer,
tokens, weight)` around the pipeline call.

The pixel masks and their mapping to the token grid live here too (the training masks build on them):
Wan's VAE turns frame 0 into latent frame 0 and frames 4t-3..4t into latent frame t, and each transformer
token covers 2x2 latent pixels (16x16 frame pixels); a token is in when any of its pixels is, in any of its
frames.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import torch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor, _get_qkv_projections

from kiss_core.scene.choreography import KissPlan

OUTER_LIPS = slice(48, 60)


def fill_mask(shape: tuple[int, int], points: np.ndarray, hull: bool) -> np.ndarray:
    """(H, W) uint8 0/1: the polygon of `points` (their convex hull when `hull`) filled."""
    mask = np.zeros(shape, np.uint8)
    polygon = cv2.convexHull(points.astype(np.float32)) if hull else points
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32).reshape(-1, 1, 2)], 1)
    return mask


def grow_mask(mask: np.ndarray, radius: float) -> np.ndarray:
    """`mask` dilated by a disc of `radius` pixels (rounded; unchanged under 0.5)."""
    r = round(radius)
    if r <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask, kernel)


def lip_masks(landmarks: np.ndarray, width: int, height: int, dilation: float = 0.0) -> np.ndarray:
    """(F, H, W) uint8: every person's outer lips in each frame of (F, P, 68, 2) landmarks, grown by
    `dilation` x the face width (the inference-time attention bias's region)."""
    masks = np.zeros((landmarks.shape[0], height, width), np.uint8)
    for frame, people in enumerate(landmarks):
        for points in people:
            masks[frame] |= fill_mask((height, width), points[OUTER_LIPS], hull=False)
        width_px = float(np.mean([np.linalg.norm(p[16] - p[0]) for p in people])) if len(people) else 0.0
        masks[frame] = grow_mask(masks[frame], dilation * width_px)
    return masks


def token_mask(masks: np.ndarray, temporal: int = 4, spatial: int = 16) -> np.ndarray:
    """(T_lat, H/spatial, W/spatial) float32 0/1: a token is in when any pixel of any of its frames is."""
    frames, height, width = masks.shape
    if (frames - 1) % temporal or height % spatial or width % spatial:
        raise ValueError(
            f"masks of {frames} frames {width}x{height} do not map to a {temporal}x{spatial}x{spatial} latent"
            " token grid (frames 4k+1, sides divisible by 16)"
        )
    groups = [masks[:1]] + [
        masks[1 + temporal * t : 1 + temporal * (t + 1)] for t in range((frames - 1) // temporal)
    ]
    per_latent = np.stack([g.max(axis=0) for g in groups])
    tokens = per_latent.reshape(len(groups), height // spatial, spatial, width // spatial, spatial).max(
        axis=(2, 4)
    )
    return tokens.astype(np.float32)


def lip_tokens(
    landmarks: np.ndarray,
    width: int,
    height: int,
    dilation: float = 0.1,
    temporal: int = 4,
    spatial: int = 16,
) -> torch.Tensor:
    """(N,) float 0/1 over the transformer's tokens in its order (latent frame, row, column), from
    (F, P, 68, 2) landmarks of a 4k+1-frame video at width x height; `temporal` frames and `spatial` pixels
    per token side (VAE compression x patch size: 4 and 16 for Wan 2.1/2.2 14B)."""
    masks = lip_masks(landmarks, width, height, dilation)
    return torch.from_numpy(token_mask(masks, temporal, spatial).reshape(-1))


def plan_lip_tokens(
    plan: KissPlan, frames: int, dilation: float = 0.1, temporal: int = 4, spatial: int = 16
) -> torch.Tensor:
    """`lip_tokens` of a kiss plan rendered as `frames` frames (Wan's 4k+1 >= the plan's frame count: the
    tail holds the last pose, as the backends pad it) at the plan's size."""
    landmarks = np.stack([plan.tracks["a"].landmarks, plan.tracks["b"].landmarks], axis=1)[:frames]
    if len(landmarks) < frames:
        landmarks = np.concatenate([landmarks, np.repeat(landmarks[-1:], frames - len(landmarks), axis=0)])
    return lip_tokens(landmarks, plan.width, plan.height, dilation, temporal, spatial)


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
    """Within the block: every block's self-attention biased toward `tokens`; the processors are restored,
    also when the block raises. Each new processor keeps the attention backend (and context-parallel
    config) that `set_attention_backend` gave the one it replaces."""
    blocks = [*transformer.blocks, *getattr(transformer, "vace_blocks", [])]
    previous = [block.attn1.processor for block in blocks]
    processors = [LipAttentionBias(tokens, weight, record) for _ in blocks]
    for block, old, processor in zip(blocks, previous, processors, strict=True):
        processor._attention_backend = getattr(old, "_attention_backend", None)
        processor._parallel_config = getattr(old, "_parallel_config", None)
        block.attn1.set_processor(processor)
    try:
        yield processors
    finally:
        for block, processor in zip(blocks, previous, strict=True):
            block.attn1.set_processor(processor)
