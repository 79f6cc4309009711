"""kiss_core.generation.gpu.cap_gpu_memory against torch's own argument checks.

There is no CUDA device here, so only the driver below torch's `set_per_process_memory_fraction` is
stood in for (its lazy init, the current device, the C call that sets the cap): the function itself,
with its device-index check, is torch's. A device that check refuses would stop every GPU replica
that sets `gpu_memory_fraction` (the single-gpu profile does) at start.
"""

from __future__ import annotations

import pytest
import torch

from kiss_core.generation.gpu import cap_gpu_memory


@pytest.fixture
def driver(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, int]]:
    """The caps torch passed to the (absent) CUDA driver, as (fraction, device index)."""
    calls: list[tuple[float, int]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda.memory, "_lazy_init", lambda: None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch._C, "_cuda_setMemoryFraction", lambda f, d: calls.append((f, d)), raising=False)
    return calls


@pytest.mark.parametrize(("device", "index"), [(None, 0), ("cuda", 0), ("cuda:0", 0), ("cuda:1", 1)])
def test_the_cap_reaches_the_device_whether_or_not_it_names_an_index(
    driver: list[tuple[float, int]], device: str | None, index: int
) -> None:
    assert cap_gpu_memory(0.72, device) is True
    assert driver == [(0.72, index)]


def test_no_cap_no_call_and_a_cpu_device_is_not_capped(driver: list[tuple[float, int]]) -> None:
    assert cap_gpu_memory(None) is False
    assert cap_gpu_memory(0.5, "cpu") is False
    assert driver == []
