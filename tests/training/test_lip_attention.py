"""The lip-token attention bias on the tiny Wan I2V transformer: more attention mass on the lip tokens, and
weight 0 bit-identical to the plain processor."""

from __future__ import annotations

import numpy as np
import torch

from kiss_core.generation.backends.lip_attention import lip_attention, lip_tokens
from tests.support.tiny_wan import _i2v_transformer
from tests.support.training_set import draw_clip


def _inputs() -> dict[str, object]:
    generator = torch.Generator().manual_seed(0)
    return {
        "hidden_states": torch.randn(1, 36, 3, 8, 8, generator=generator),
        "timestep": torch.tensor([700.0]),
        "encoder_hidden_states": torch.randn(1, 8, 32, generator=generator),
        "encoder_hidden_states_image": torch.randn(1, 4, 4, generator=generator),
        "return_dict": False,
    }


def _tokens() -> torch.Tensor:
    _, landmarks = draw_clip(1, 9, 64, 64)  # two drawn faces meeting; 9 frames 64x64 -> 3 x 4 x 4 tokens
    tokens = lip_tokens(landmarks, 64, 64)
    assert tokens.shape == (48,) and 0 < int(tokens.sum()) < 48
    return tokens


def test_the_bias_raises_the_attention_mass_on_the_lip_tokens_and_weight_0_changes_nothing() -> None:
    transformer = _i2v_transformer(0, image_dim=4).eval()
    tokens, inputs = _tokens(), _inputs()
    with torch.no_grad():
        plain = transformer(**inputs)[0]
        with lip_attention(transformer, tokens, 0.0):
            unbiased = transformer(**inputs)[0]
        with lip_attention(transformer, tokens, 0.0, record=True) as processors:
            transformer(**inputs)
            before = [p.lip_mass for p in processors]
        with lip_attention(transformer, tokens, 2.0, record=True) as processors:
            biased = transformer(**inputs)[0]
            after = [p.lip_mass for p in processors]
        restored = transformer(**inputs)[0]
    assert torch.equal(unbiased, plain), "weight 0 reproduces the plain output exactly"
    assert torch.equal(restored, plain), "the plain processors are back after the block"
    assert all(
        a is not None and b is not None and a > b + 0.05 for a, b in zip(after, before, strict=True)
    ), (
        before,
        after,
    )
    print(f"lip attention mass per block, weight 0: {before}, weight 2: {after}")
    share = float(tokens.mean())
    assert np.isclose(before[0], share, atol=0.25), "unbiased, the lips get about their share of the tokens"
    assert (biased - plain).abs().mean() > 1e-4


def test_the_measured_probabilities_are_the_ones_the_attention_output_is_made_of() -> None:
    """probabilities @ V through to_out is attn1's own output: `lip_mass` measures the real attention."""
    from kiss_core.generation.backends.lip_attention import attention_probabilities

    transformer = _i2v_transformer(0, image_dim=4).eval()
    attn = transformer.blocks[0].attn1
    seen: dict[str, object] = {}
    handles = [
        attn.register_forward_pre_hook(lambda _m, args: seen.__setitem__("args", args)),
        attn.register_forward_hook(lambda _m, _a, out: seen.__setitem__("out", out)),
    ]
    bias = 2.0 * _tokens().view(1, 1, 1, -1)
    with torch.no_grad(), lip_attention(transformer, _tokens(), 2.0):
        transformer(**_inputs())
        hidden, _, _, rotary = seen["args"]  # type: ignore[misc]
        probs = attention_probabilities(attn, hidden, rotary, bias)
        value = attn.to_v(hidden).unflatten(2, (attn.heads, -1)).transpose(1, 2)
        mixed = (probs @ value.float()).transpose(1, 2).flatten(2, 3)
        rebuilt = attn.to_out[1](attn.to_out[0](mixed))
    for handle in handles:
        handle.remove()
    torch.testing.assert_close(rebuilt, seen["out"], rtol=1e-4, atol=1e-5)


def test_a_kiss_plan_gives_lip_tokens_where_its_mouths_are() -> None:
    from kiss_core.generation.backends.lip_attention import plan_lip_tokens
    from kiss_core.scene.choreography import plan_kiss
    from kiss_core.schemas import VideoParams
    from tests.support.mean_face import mean_face_analysis

    analyses = {
        "a": mean_face_analysis("a", (480, 600), (60, 150, 260, 362)),
        "b": mean_face_analysis("b", (480, 600), (220, 150, 420, 362)),
    }
    plan = plan_kiss(analyses, VideoParams(style="peck", size="160x128", seconds=1.0, fps=8))
    tokens = plan_lip_tokens(plan, frames=9)  # 8 planned frames, generated as 9
    assert tokens.shape == (3 * 8 * 10,)
    grid = tokens.view(3, 8, 10)
    mouths = [(plan.mouth_centers()[s][-1] // 16).astype(int) for s in ("a", "b")]
    for x, y in mouths:
        assert grid[2, y, x] == 1, "the last latent frame has each mouth's token"
    assert 0 < float(tokens.mean()) < 0.5
