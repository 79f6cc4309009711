"""Property tests of the request contract: any form values either validate into a consistent
VideoParams or fail with a pydantic ValidationError (which the ingress turns into problem+json)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kiss_core.schemas import VideoParams

FIELDS = list(VideoParams.model_fields)
numbers = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e309", "-0", "0x10", "1_000", " 5 ", "５"]),
)
sizes = st.builds(
    lambda w, h, sep: f"{w}{sep}{h}", st.integers(-10, 5000), st.integers(-10, 5000), st.sampled_from("xX*")
)
form_value = st.one_of(
    st.text(max_size=40), numbers, sizes, st.sampled_from(["peck", "romantic", "video", "image"])
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), form_value, max_size=len(FIELDS)))
def test_form_values_validate_or_fail_cleanly(values: dict[str, str]) -> None:
    try:
        params = VideoParams.model_validate(values)
    except ValidationError:
        return
    assert params.style in ("peck", "romantic", "french", "cheek")
    assert 0.0 <= params.intensity <= 1.0 and math.isfinite(params.intensity)
    assert 1.0 <= params.seconds <= 10.0
    assert 8 <= params.fps <= 30 and 0 <= params.seed < 2**31
    assert params.width % 16 == 0 and params.height % 16 == 0
    assert 128 <= params.width <= 1280 and 128 <= params.height <= 1280
    assert params.frame_count == max(1, round(params.seconds * params.fps)) <= 300


@settings(max_examples=200, deadline=None)
@given(st.integers(8, 1280), st.integers(8, 1280))
def test_sizes_are_accepted_exactly_when_divisible_by_16_and_in_range(width: int, height: int) -> None:
    ok = all(v % 16 == 0 and 128 <= v <= 1280 for v in (width, height))
    try:
        VideoParams(size=f"{width}x{height}")
    except ValidationError:
        assert not ok
    else:
        assert ok
