"""The LoRA: peft adapters on the transformer's projections, their state, and the export the service loads.

The export is the service's own layout (kiss_core.generation.backends.loras): loras/<name>.safetensors
written by diffusers' `WanLoraLoaderMixin.save_lora_weights` (keys `transformer.<module>.lora_A/B.weight`,
the peft config as adapter metadata so alpha / rank survive) and <name>.yaml with base, trigger words and
scale. The service's loader reads it as any diffusers LoRA, with no conversion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from kiss_core.generation.backends.loras import LoraFile
from kiss_core.generation.backends.weights import PIPELINE_CLASSES, DiffusionBackend
from kiss_core.training.config import TrainConfig

ADAPTER = "kiss_train"  # the adapter's name inside the training transformer (peft keys: no dots)


def lora_config(config: TrainConfig, transformer: torch.nn.Module, seed: int) -> Any:
    """peft LoraConfig for the targets this transformer has; raises naming targets that match nothing."""
    from peft import LoraConfig

    names = [name for name, _ in transformer.named_modules()]
    missing = [t for t in config.targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ValueError(f"LoRA `targets` {missing} match no module of the {type(transformer).__name__}")
    torch.manual_seed(seed)  # peft's kaiming init of lora_A draws from the global generator
    return LoraConfig(
        r=config.rank, lora_alpha=config.alpha, target_modules=list(config.targets), init_lora_weights=True
    )


def add_lora(transformer: Any, config: TrainConfig) -> list[torch.nn.Parameter]:
    """Freezes the base, adds the adapter (float32 weights), returns the trainable parameters."""
    transformer.requires_grad_(False)
    transformer.add_adapter(lora_config(config, transformer, config.seed), adapter_name=ADAPTER)
    params = [p for p in transformer.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    return params


def lora_state(transformer: Any) -> dict[str, torch.Tensor]:
    """The adapter's weights in peft's naming (no adapter name), on the CPU."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(transformer, adapter_name=ADAPTER)
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def load_lora_state(transformer: Any, state: dict[str, torch.Tensor]) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(transformer, state, adapter_name=ADAPTER)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"checkpoint LoRA keys match no adapter weight: {unexpected[:3]}")


def export_lora(
    transformer: Any,
    config: TrainConfig,
    base: DiffusionBackend,
    folder: Path,
    dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """loras/<name>.safetensors + <name>.yaml in `folder`, as the service loads them; the weights' path."""
    import diffusers

    folder.mkdir(parents=True, exist_ok=True)
    layers = {k: v.to(dtype) for k, v in lora_state(transformer).items()}
    peft_config = transformer.peft_config[ADAPTER].to_dict()
    peft_config["target_modules"] = sorted(peft_config["target_modules"])  # a set: not JSON
    pipeline = getattr(diffusers, PIPELINE_CLASSES[base])
    weights = f"{config.name}.safetensors"
    pipeline.save_lora_weights(
        folder,
        transformer_lora_layers=layers,
        weight_name=weights,
        transformer_lora_adapter_metadata=peft_config,
    )
    meta = LoraFile(base=base, trigger_words=config.trigger_words, scale=config.scale)  # validated as read
    fields = meta.model_dump(include={"base", "trigger_words", "scale"})
    (folder / f"{config.name}.yaml").write_text(yaml.safe_dump(fields, sort_keys=False), encoding="utf-8")
    return folder / weights
