"""What a GPU replica checks and shares when it starts: the weights must fit its declared GPU memory
(computed from the mounted configs), and the encoder holds one UMT5 for backends that ship the same one.
Tiny random-weight Wan pipelines; the real 14B arithmetic is tests/unit/test_memory.py's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from kiss_core.errors import GpuMemoryInsufficient
from kiss_core.generation.backends.weights import same_component_files
from kiss_core.jobs.stages import load_backends, load_conditioners
from kiss_core.settings import Settings
from tests.support.tiny_wan import _text_encoder, build_model_root

TEXT_PARTS = ("text_encoder", "tokenizer")


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_root(tmp_path_factory.mktemp("models"))


def _settings(model_root: Path, **generator: object) -> Settings:
    return Settings(
        generator={"model_root": str(model_root), "enabled": ["wan-i2v", "wan-vace"], **generator}
    )


def test_a_generator_whose_weights_do_not_fit_its_gpu_memory_refuses_to_start_with_the_numbers(
    model_root: Path,
) -> None:
    tiny = 64 * 2**10 / 2**30  # 64 KiB: less than the tiny transformers
    with pytest.raises(
        GpuMemoryInsufficient, match=r"generator replica with \['wan-i2v', 'wan-vace'\]"
    ) as err:
        load_backends(_settings(model_root, gpu_memory_gib=tiny, gpu_memory_fraction=0.5))
    message = str(err.value)
    assert "wan-i2v/transformer" in message and "wan-vace/vae" in message and "GiB of GPU memory" in message
    loaded = load_backends(_settings(model_root, gpu_memory_gib=1.0))  # the tiny weights fit 1 GiB
    assert set(loaded) == {"preview", "wan-i2v", "wan-vace"}


def test_an_encoder_whose_weights_do_not_fit_refuses_before_loading(model_root: Path) -> None:
    with pytest.raises(GpuMemoryInsufficient, match="encoder replica"):
        load_conditioners(_settings(model_root, gpu_memory_gib=1e-6))


def test_the_encoder_loads_one_umt5_for_backends_that_ship_the_same_files(model_root: Path) -> None:
    assert same_component_files(
        model_root / "wan-i2v", model_root / "wan-vace", ("text_encoder", "tokenizer")
    )
    shared = load_conditioners(_settings(model_root))
    separate = load_conditioners(_settings(model_root, share_text_encoder=False))
    assert shared["wan-i2v"].pipe.text_encoder is shared["wan-vace"].pipe.text_encoder
    assert separate["wan-i2v"].pipe.text_encoder is not separate["wan-vace"].pipe.text_encoder
    prompt = "two people kiss on a beach"
    for backend in ("wan-i2v", "wan-vace"):
        got, _ = shared[backend].prompt_embeds(prompt, None)
        want, _ = separate[backend].prompt_embeds(prompt, None)
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_a_different_text_encoder_is_loaded_on_its_own(model_root: Path, tmp_path: Path) -> None:
    other = tmp_path / "models"
    shutil.copytree(model_root, other)
    shutil.rmtree(other / "wan-vace" / "text_encoder")
    encoder = _text_encoder(vocab_size=_text_encoder_vocab(model_root))
    torch.manual_seed(7)
    for parameter in encoder.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    encoder.save_pretrained(other / "wan-vace" / "text_encoder")
    assert not same_component_files(other / "wan-i2v", other / "wan-vace", TEXT_PARTS)
    conditioners = load_conditioners(_settings(other))
    assert conditioners["wan-i2v"].pipe.text_encoder is not conditioners["wan-vace"].pipe.text_encoder


def _text_encoder_vocab(model_root: Path) -> int:
    import json

    return int(
        json.loads((model_root / "wan-i2v" / "text_encoder" / "config.json").read_text())["vocab_size"]
    )
