"""The weights' bytes of each replica, computed from the model configs before anything is loaded.

Each component is built from its config on torch's meta device (shapes only, no memory), so the
count is exact for whatever checkpoint is mounted and takes well under a second per model. A replica
refuses at start, with the numbers, a layout whose weights cannot fit the GPU memory it was given,
instead of failing with an out-of-memory error minutes into loading or in the middle of a video.

Which replica holds what (kiss_core.generation.backends.wan):
- VideoGenerator: the transformer(s) in the generation dtype (bfloat16 on a GPU; Wan2.2 A14B has two
  experts) and the VAE, always float32.
- IdentityEncoder: the UMT5 text encoder in the generation dtype, once for all backends (the same
  umt5-xxl weights), and the CLIP image encoder in float32 (as diffusers' Wan I2V example loads it)
  for backends whose transformer takes image embeddings.

Activations come on top (they grow with the tokens a request may have, `max_tokens`): the check
leaves `reserve_gib` free for them.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiss_core.errors import GpuMemoryInsufficient, ModelDirectoryError
from kiss_core.generation.backends.weights import shares_text_encoder

GIB = 2**30
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
TRANSFORMERS = ("transformer", "transformer_2")
GENERATOR_COMPONENTS = (*TRANSFORMERS, "vae")
ENCODER_COMPONENTS = ("text_encoder", "image_encoder")
# Components that run in float32 whatever the generation dtype.
FLOAT32_COMPONENTS = frozenset({"vae", "image_encoder"})


@dataclass(frozen=True)
class ComponentWeights:
    """One model of a pipeline: its parameter count and the bytes its weights take in `dtype`."""

    component: str
    parameters: int
    dtype: str
    buffer_bytes: int = 0  # RoPE tables, position ids: kept in their own dtype

    @property
    def bytes(self) -> int:
        return self.parameters * DTYPE_BYTES[self.dtype] + self.buffer_bytes

    @property
    def gib(self) -> float:
        return self.bytes / GIB


def _build_on_meta(component: str, config: Mapping[str, Any]) -> Any:
    """The component's module with every tensor on the meta device (no storage)."""
    import torch

    config = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        if component in TRANSFORMERS:
            from diffusers import WanTransformer3DModel, WanVACETransformer3DModel

            cls = WanVACETransformer3DModel if config.get("vace_layers") else WanTransformer3DModel
            return cls.from_config(config)
        if component == "vae":
            from diffusers import AutoencoderKLWan

            return AutoencoderKLWan.from_config(config)
        if component == "text_encoder":
            from transformers import UMT5Config, UMT5EncoderModel

            return UMT5EncoderModel(UMT5Config(**config))
        if component == "image_encoder":
            from transformers import CLIPVisionConfig, CLIPVisionModel

            return CLIPVisionModel(CLIPVisionConfig(**config))
    raise ValueError(
        f"`component` must be one of {(*GENERATOR_COMPONENTS, *ENCODER_COMPONENTS)} but is {component!r}"
    )


_COUNTS: dict[tuple[str, str], tuple[int, int]] = {}


def count_parameters(component: str, config: Mapping[str, Any]) -> tuple[int, int]:
    """(parameters, bytes of buffers) of the component built from `config`, memoised per config."""
    key = (component, json.dumps(config, sort_keys=True, default=str))
    if key not in _COUNTS:
        module = _build_on_meta(component, config)
        parameters = sum(p.numel() for p in module.parameters())
        _COUNTS[key] = (parameters, sum(b.numel() * b.element_size() for b in module.buffers()))
    return _COUNTS[key]


def component_weights(component: str, config: Mapping[str, Any], dtype: str = "bfloat16") -> ComponentWeights:
    """The component's weights in the dtype it runs in (float32 for the VAE and CLIP, else `dtype`)."""
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"`dtype` must be one of {sorted(DTYPE_BYTES)} but is {dtype!r}")
    runs_in = "float32" if component in FLOAT32_COMPONENTS else dtype
    parameters, buffer_bytes = count_parameters(component, config)
    return ComponentWeights(component, parameters, runs_in, buffer_bytes)


def read_configs(directory: Path) -> dict[str, dict[str, Any]]:
    """`<component>/config.json` of each model component a pipeline directory has (configs only)."""
    configs = {}
    for component in (*GENERATOR_COMPONENTS, *ENCODER_COMPONENTS):
        path = directory / component / "config.json"
        if path.is_file():
            try:
                configs[component] = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ModelDirectoryError(
                    f"model directory {directory}: `{component}/config.json`: {exc}"
                ) from exc
    return configs


@dataclass(frozen=True)
class BackendMemory:
    """One backend's weights, by component, and what each replica kind holds of them."""

    backend: str
    components: dict[str, ComponentWeights]

    def gib(self, *names: str) -> float:
        return sum(self.components[n].gib for n in names if n in self.components)

    @property
    def generator_bytes(self) -> int:
        return sum(w.bytes for n, w in self.components.items() if n in GENERATOR_COMPONENTS)

    @property
    def encoder_bytes(self) -> int:
        return sum(w.bytes for n, w in self.components.items() if n in ENCODER_COMPONENTS)


def backend_memory(
    backend: str, configs: Mapping[str, Mapping[str, Any]], dtype: str = "bfloat16"
) -> BackendMemory:
    return BackendMemory(backend, {n: component_weights(n, c, dtype) for n, c in configs.items()})


def memory_table(
    backends: Mapping[str, Mapping[str, Mapping[str, Any]]], dtype: str = "bfloat16"
) -> list[dict[str, Any]]:
    """Rows for the docs: per backend, GiB of transformer(s), VAE, text and image encoder, and per replica."""
    rows = []
    for name, configs in backends.items():
        memory = backend_memory(name, configs, dtype)
        transformers = [memory.components[t] for t in TRANSFORMERS if t in memory.components]
        rows.append(
            {
                "backend": name,
                "transformers": len(transformers),
                "transformer_parameters": sum(t.parameters for t in transformers),
                "transformer_gib": round(memory.gib(*TRANSFORMERS), 2),
                "vae_gib": round(memory.gib("vae"), 2),
                "text_encoder_gib": round(memory.gib("text_encoder"), 2),
                "image_encoder_gib": round(memory.gib("image_encoder"), 2),
                "generator_gib": round(memory.generator_bytes / GIB, 2),
                "encoder_gib": round(memory.encoder_bytes / GIB, 2),
            }
        )
    return rows


def format_table(rows: Iterable[Mapping[str, Any]], dtype: str = "bfloat16") -> str:
    """The table as Markdown (the docs page shows it)."""
    lines = [
        f"| backend | transformer(s), {dtype} | VAE, float32 | UMT5, {dtype} | CLIP, float32"
        " | generator replica | encoder replica |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        count = f"{r['transformers']} x " if r["transformers"] > 1 else ""
        lines.append(
            f"| {r['backend']} | {count}{r['transformer_parameters'] / 1e9 / max(r['transformers'], 1):.2f} B"
            f" = {r['transformer_gib']:.1f} GiB | {r['vae_gib']:.2f} GiB | {r['text_encoder_gib']:.1f} GiB"
            f" | {r['image_encoder_gib']:.2f} GiB | {r['generator_gib']:.1f} GiB"
            f" | {r['encoder_gib']:.1f} GiB |"
        )
    return "\n".join(lines)


def replica_bytes(
    memories: Iterable[BackendMemory], role: str, own_text_encoder: Collection[str] = ()
) -> dict[str, int]:
    """Bytes of each weight a replica of `role` ("generator" or "encoder") holds for these backends.

    A generator holds every loaded backend's transformer(s) and VAE; an encoder holds one text encoder
    (the same UMT5 for all Wan backends: the largest counted once) and each backend's image encoder, plus
    a text encoder of their own for the backends in `own_text_encoder` (not shared: `text_encoder_owners`).
    """
    if role not in ("generator", "encoder"):
        raise ValueError(f"`role` must be 'generator' or 'encoder' but is {role!r}")
    held: dict[str, int] = {}
    for memory in memories:
        for name, weights in memory.components.items():
            if (
                (role == "generator" and name in GENERATOR_COMPONENTS)
                or (role == "encoder" and name == "image_encoder")
                or (role == "encoder" and name == "text_encoder" and memory.backend in own_text_encoder)
            ):
                held[f"{memory.backend}/{name}"] = weights.bytes
            elif role == "encoder" and name == "text_encoder":
                held["text_encoder"] = max(held.get("text_encoder", 0), weights.bytes)
    return held


def text_encoder_owners(model_root: Path, backends: Sequence[str], share: bool = True) -> list[str]:
    """The backends after the first whose encoder replica loads a UMT5 of its own, by WanConditioner's
    rule (`shares_text_encoder`): all of them without `share`, else those whose text encoder and
    tokenizer are not the same files as the first backend's."""
    if not backends:
        return []
    first = model_root / backends[0]
    return [b for b in backends[1:] if not shares_text_encoder(first, model_root / b, share)]


def check_fits(held: Mapping[str, int], gpu_memory_bytes: int, reserve_gib: float, what: str) -> None:
    """Raise GpuMemoryInsufficient, naming each weight, when weights + reserve exceed the GPU memory."""
    total = sum(held.values())
    if total + reserve_gib * GIB <= gpu_memory_bytes:
        return
    parts = ", ".join(f"{name} {size / GIB:.1f} GiB" for name, size in sorted(held.items()))
    raise GpuMemoryInsufficient(
        f"{what}: the weights take {total / GIB:.1f} GiB ({parts}) and {reserve_gib:g} GiB is kept for"
        f" activations, {(total + reserve_gib * GIB) / GIB:.1f} GiB in all, but the replica has"
        f" {gpu_memory_bytes / GIB:.1f} GiB of GPU memory; load fewer backends per replica, give it a larger"
        " share of the GPU or enable CPU offload"
    )


def check_replica_layout(
    model_root: Path,
    backends: Iterable[str],
    role: str,
    gpu_memory_bytes: int,
    dtype: str = "bfloat16",
    reserve_gib: float = 0.0,
    share_text_encoder: bool = True,
) -> dict[str, int]:
    """At replica start: the weights it will load (from the mounted configs) must fit; returns them."""
    names = list(backends)
    memories = [backend_memory(b, read_configs(model_root / b), dtype) for b in names]
    owners = text_encoder_owners(model_root, names, share_text_encoder) if role == "encoder" else []
    held = replica_bytes(memories, role, owners)
    check_fits(held, gpu_memory_bytes, reserve_gib, f"the {role} replica with {sorted(names)}")
    return held
