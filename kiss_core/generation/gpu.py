"""The GPU a stage runs on: which device, and how much of its memory this process may take."""

from __future__ import annotations

import logging

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
    torch.cuda.set_per_process_memory_fraction(fraction, target)
    return True
