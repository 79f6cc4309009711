"""Training memory per GPU for a Wan base with a LoRA, from its transformer config (meta device).

One GPU holds, for the whole run (no FSDP/DeepSpeed: the frozen base is not sharded, data parallelism
replicates it on every GPU):
- the frozen transformer in bfloat16, counted exactly as kiss_core.generation.memory counts it;
- the LoRA: r x (in + out) parameters per targeted Linear, counted on the meta-device model, at 16 bytes
  a parameter (float32 weight, float32 gradient, AdamW's two float32 moments);
- activations, which grow with the tokens of a clip: N = latent frames x (H/16) x (W/16).
  With gradient checkpointing each block keeps only its input (N x dim, bf16) for the backward pass
  (exact), plus the working set of the one block being recomputed: an ESTIMATE of ~20 N x dim + 3 N x ffn
  bf16 elements (norms, q/k/v and rotated q/k, attention and projection outputs, cross-attention, the two
  FFN activations, and the bf16 inputs each LoRA layer saves). Without checkpointing every block keeps its
  working set. Attention itself is assumed memory-efficient (SDPA flash/efficient kernels: no N x N).
The VAE and the text/image encoders are not on the training GPUs: they run once in the precompute.
CUDA context and allocator fragmentation (typically 1-3 GiB) come on top.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from kiss_core.generation.memory import GIB, component_weights

LORA_BYTES_PER_PARAMETER = 16  # fp32 weight + fp32 grad + AdamW exp_avg + exp_avg_sq
BF16 = 2
BLOCK_DIM_TERMS = 20  # the estimate's N x dim tensors of one block under recomputation
BLOCK_FFN_TERMS = 3  # and its N x ffn_dim ones


def lora_parameters(transformer_config: Mapping[str, Any], targets: Sequence[str], rank: int) -> int:
    """r x (in_features + out_features) summed over the Linear layers whose names end with a target."""
    import torch

    config = {k: v for k, v in transformer_config.items() if not k.startswith("_")}
    with torch.device("meta"):
        from diffusers import WanTransformer3DModel, WanVACETransformer3DModel

        cls = WanVACETransformer3DModel if config.get("vace_layers") else WanTransformer3DModel
        model = cls.from_config(config)
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            total += rank * (module.in_features + module.out_features)
    return total


def latent_tokens(frames: int, width: int, height: int, patch: Sequence[int] = (1, 2, 2)) -> int:
    """Transformer tokens of a clip: latent frames (4k+1 -> k+1) x (H/8/patch) x (W/8/patch)."""
    return ((frames - 1) // 4 + 1) // patch[0] * (height // 8 // patch[1]) * (width // 8 // patch[2])


@dataclass(frozen=True)
class TrainingMemory:
    base: str
    frames: int
    width: int
    height: int
    batch: int
    tokens: int
    rank: int
    gradient_checkpointing: bool
    transformer_gib: float
    lora_parameters: int
    lora_gib: float  # weights, grads and optimizer state
    saved_gib: float  # block inputs kept for the backward pass (exact)
    block_gib: float  # working set of one block (estimate)
    total_gib: float


def training_memory(
    base: str,
    transformer_config: Mapping[str, Any],
    targets: Sequence[str],
    rank: int,
    frames: int,
    width: int,
    height: int,
    batch: int = 1,
    gradient_checkpointing: bool = True,
) -> TrainingMemory:
    """The per-GPU memory of a LoRA run on this transformer (see the module docstring for what is exact)."""
    weights = component_weights("transformer", transformer_config, "bfloat16")
    lora = lora_parameters(transformer_config, targets, rank)
    dim = int(transformer_config["num_attention_heads"]) * int(transformer_config["attention_head_dim"])
    ffn = int(transformer_config["ffn_dim"])
    layers = int(transformer_config["num_layers"]) + len(transformer_config.get("vace_layers") or [])
    tokens = latent_tokens(frames, width, height, transformer_config.get("patch_size", (1, 2, 2)))
    block = batch * tokens * (BLOCK_DIM_TERMS * dim + BLOCK_FFN_TERMS * ffn) * BF16
    if gradient_checkpointing:
        saved = layers * batch * tokens * dim * BF16
        working = block
    else:
        saved = layers * block
        working = 0
    total = weights.bytes + lora * LORA_BYTES_PER_PARAMETER + saved + working
    return TrainingMemory(
        base=base,
        frames=frames,
        width=width,
        height=height,
        batch=batch,
        tokens=tokens,
        rank=rank,
        gradient_checkpointing=gradient_checkpointing,
        transformer_gib=round(weights.bytes / GIB, 2),
        lora_parameters=lora,
        lora_gib=round(lora * LORA_BYTES_PER_PARAMETER / GIB, 2),
        saved_gib=round(saved / GIB, 2),
        block_gib=round(working / GIB, 2),
        total_gib=round(total / GIB, 1),
    )


def format_memory_table(rows: Iterable[TrainingMemory]) -> str:
    """Markdown, as docs/training.md shows it."""
    lines = [
        "| base | clip | tokens | checkpointing | transformer bf16 | LoRA r (params) + grads + AdamW"
        " | saved activations | one block (estimate) | per GPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        checkpointing = "on" if r.gradient_checkpointing else "off"
        lora = f"r={r.rank} ({r.lora_parameters / 1e6:.0f} M): {r.lora_gib:.2f} GiB"
        lines.append(
            f"| {r.base} | {r.frames} x {r.width}x{r.height} | {r.tokens} | {checkpointing}"
            f" | {r.transformer_gib:.1f} GiB | {lora} | {r.saved_gib:.1f} GiB | {r.block_gib:.1f} GiB"
            f" | **{r.total_gib:.1f} GiB** |"
        )
    return "\n".join(lines)


def as_dict(row: TrainingMemory) -> dict[str, Any]:
    return asdict(row)
