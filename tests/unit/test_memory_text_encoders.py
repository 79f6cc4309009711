"""The encoder replica's start-up memory check counts the UMT5s the replica will really load.

WanConditioner (kiss_core.generation.backends.wan) reuses the first backend's UMT5 only under
`share_text_encoder` and when both directories hold the same `text_encoder/` and `tokenizer/` files;
otherwise each backend loads its own (10.6 GiB each in bfloat16). The check must count them so, or it
passes a layout that then runs out of memory while loading, which is what it is there to prevent.
Real Wan 2.1 configs on the meta device, nothing loaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kiss_core.errors import GpuMemoryInsufficient
from kiss_core.generation.gpu import check_weights_fit
from kiss_core.settings import GeneratorSettings
from tests.support.wan_configs import write_config_directory

BACKENDS = ["wan-i2v", "wan-vace"]


def _root(tmp_path: Path, same_tokenizer: bool) -> Path:
    write_config_directory(tmp_path / "wan-i2v", "Wan2.1-I2V-14B-480P")
    write_config_directory(tmp_path / "wan-vace", "Wan2.1-VACE-14B")
    for backend, vocabulary in (("wan-i2v", "umt5"), ("wan-vace", "umt5" if same_tokenizer else "other")):
        tokenizer = tmp_path / backend / "tokenizer"
        tokenizer.mkdir()
        (tokenizer / "tokenizer_config.json").write_text(f'{{"name": "{vocabulary}"}}', encoding="utf-8")
    return tmp_path


def _settings(root: Path, share: bool = True) -> GeneratorSettings:
    # 20 GiB: one UMT5 (10.6 GiB) and CLIP (2.35 GiB) fit, two UMT5s do not.
    return GeneratorSettings(model_root=root, gpu_memory_gib=20.0, share_text_encoder=share)


def test_one_shared_umt5_is_counted_once(tmp_path: Path) -> None:
    held = check_weights_fit(_settings(_root(tmp_path, same_tokenizer=True)), BACKENDS, "encoder")
    assert held is not None and set(held) == {"text_encoder", "wan-i2v/image_encoder"}


def test_unshared_umt5s_are_each_counted(tmp_path: Path) -> None:
    root = _root(tmp_path, same_tokenizer=True)
    with pytest.raises(GpuMemoryInsufficient, match=r"wan-vace/text_encoder 10\.6 GiB"):
        check_weights_fit(_settings(root, share=False), BACKENDS, "encoder")


def test_backends_whose_text_encoder_files_differ_are_each_counted(tmp_path: Path) -> None:
    root = _root(tmp_path, same_tokenizer=False)
    with pytest.raises(GpuMemoryInsufficient, match=r"wan-vace/text_encoder 10\.6 GiB"):
        check_weights_fit(_settings(root), BACKENDS, "encoder")
