"""The GPU a stage runs on: which device, and how much of its memory this process may take."""

from __future__ import annotations

import logging

from kiss_core.settings import GeneratorSettings

log = logging.getLogger(__name__)


def cap_gpu_memory(fraction: float | None, device: str | None = None) -> bool:
    """Limit torch's allocator in this process to `fraction` of the device's memory (None: no cap).

    Ray's fractional `num_gpus` only places processes; without this cap two processes sharing one GPU
    can still exhaust it between them. Returns whether a cap was set (False on a machine without CUDA,
    where a declared-only GPU runs the model on the CPU).
    """
    if fraction is None:
        return False
    import torch

    if not torch.cuda.is_available():
        log.info("no CUDA device: GPU memory cap %.2f not applied", fraction)
        return False
    target = torch.device(device or "cuda")
    if target.type != "cuda":
        log.info("device %s is not a CUDA device: GPU memory cap %.2f not applied", target, fraction)
        return False
    # torch takes an index, or None for the current device: it refuses a bare torch.device("cuda").
    torch.cuda.set_per_process_memory_fraction(fraction, target.index)
    return True


def replica_gpu_bytes(settings: GeneratorSettings, fraction: float | None) -> int | None:
    """The GPU memory one replica may use: the declared or the device's, times its fraction; None on CPU."""
    if settings.gpu_memory_gib is not None:
        total = int(settings.gpu_memory_gib * 2**30)
    else:
        import torch

        if not torch.cuda.is_available() or (settings.device or "cuda").startswith("cpu"):
            return None
        total = torch.cuda.get_device_properties(torch.device(settings.device or "cuda")).total_memory
    return int(total * (fraction if fraction is not None else 1.0))


def check_weights_fit(settings: GeneratorSettings, backends: list[str], role: str) -> dict[str, int] | None:
    """At replica start, before loading: the weights of `backends` for `role` must fit this replica's GPU
    memory (GpuMemoryInsufficient names each weight otherwise). None where there is no GPU to check."""
    fraction = settings.gpu_memory_fraction if role == "generator" else settings.encoder_memory_fraction
    available = replica_gpu_bytes(settings, fraction)
    offloaded = role == "generator" and settings.offload != "none"  # weights stay in host memory
    if available is None or not backends or offloaded:
        return None
    from kiss_core.generation.memory import check_replica_layout

    dtype = "float32" if settings.dtype == "float32" else "bfloat16"
    return check_replica_layout(
        settings.model_root,
        backends,
        role,
        available,
        dtype=dtype,
        reserve_gib=settings.gpu_reserve_gib,
        share_text_encoder=settings.share_text_encoder,
    )
