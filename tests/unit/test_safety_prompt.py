"""Prompt policy: the client's addition is checked, and the model prompt is always the template."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kiss_core.safety.prompt import (
    MAX_PROMPT_CHARS,
    NEGATIVE_PROMPT,
    STYLE_PROMPTS,
    build_prompt,
    check_prompt,
    disallowed_in,
    disallowed_terms,
)
from kiss_core.schemas import VideoParams


@pytest.mark.parametrize(
    "text",
    ["on a beach at sunset", "in the rain, under an umbrella", "Essex countryside", "canteen at noon", ""],
)
def test_ordinary_scenes_pass(text: str) -> None:
    assert check_prompt(f"  {text}  ") == text
    assert VideoParams(prompt=text).prompt == text


@pytest.mark.parametrize(
    ("text", "term"),
    [
        ("two nude people", "nude"),
        ("N4KED on a beach", "naked"),  # digit swap
        ("ｎｕｄｅ", "nude"),  # full-width look-alikes (NFKC)
        ("nüde", "nude"),  # accents
        ("n.u.d.e", "nude"),  # punctuation between the letters
        ("a pornographicscene", "pornographic"),  # glued into another word
        ("in a school uniform", "school uniform"),  # phrase
        ("a teen couple", "teen"),
        ("she is drugged", "drugged"),
    ],
)
def test_disallowed_terms_are_refused_however_written(text: str, term: str) -> None:
    assert term in disallowed_in(text)
    with pytest.raises(ValueError, match=term):
        check_prompt(text)
    with pytest.raises(ValidationError, match="prompt"):
        VideoParams(prompt=text)


def test_length_and_control_characters_are_limited() -> None:
    check_prompt("a" * MAX_PROMPT_CHARS)
    with pytest.raises(ValueError, match="at most"):
        check_prompt("a" * (MAX_PROMPT_CHARS + 1))
    with pytest.raises(ValueError, match="printable"):
        check_prompt("beach\x00\x1b[31m")


def test_the_list_is_loaded_and_folded() -> None:
    terms = disallowed_terms()
    assert {"nude", "underage", "school uniform", "rape"} <= set(terms)
    assert all(term == term.lower().strip() and "#" not in term for term in terms)


@pytest.mark.parametrize("style", sorted(STYLE_PROMPTS))
def test_the_model_prompt_is_the_template_and_the_negative_prompt_never_changes(style: str) -> None:
    bare = build_prompt(style)
    scene = build_prompt(style, "on a beach at sunset")
    assert STYLE_PROMPTS[style] in bare.prompt and "fully clothed adults" in bare.prompt
    assert "Scene: on a beach at sunset." in scene.prompt and "Scene" not in bare.prompt
    assert bare.negative_prompt == scene.negative_prompt == NEGATIVE_PROMPT
    assert "nudity" in NEGATIVE_PROMPT and "minor" in NEGATIVE_PROMPT
    with pytest.raises(ValueError):
        build_prompt(style, "nude")
