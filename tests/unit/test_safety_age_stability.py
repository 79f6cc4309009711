"""Issue 17 item 2: the age gate holds under ordinary photo changes.

Face set, changes and figures come from bench/age_stability.py (the bench that writes
bench/results/age_stability.json), so the test asserts on the numbers the docs report. The faces
are real photos from the wheels (analysis only) and the synthetic subjects; nothing is generated.
Targets (issue 17): for each change the median absolute shift is at most 2 years; no face accepted
(>= threshold) in its original form is refused after any change; no change raises a face more than
2 years under the threshold to the threshold. Besides: the new estimate does not raise the unchanged
photos' estimates overall, and it keeps the old single-view estimate's behaviour where that was right.
"""

from __future__ import annotations

import pytest

from bench.age_stability import (
    CHANGES,
    Analysed,
    Estimates,
    analysed_faces,
    estimate_all,
    originals_change,
    stability_rows,
)
from kiss_core.faces.analysis import DlibFaceAnalyzer
from kiss_core.safety.age import DEFAULT_MIN_AGE, AgeEstimator

pytestmark = pytest.mark.slow  # ~25 s: 108 face analyses

THRESHOLD = DEFAULT_MIN_AGE
MAX_MEDIAN_SHIFT = 2.0


@pytest.fixture(scope="module")
def analysed() -> Analysed:
    return analysed_faces(DlibFaceAnalyzer())


@pytest.fixture(scope="module")
def after(analysed: Analysed) -> Estimates:
    return estimate_all(AgeEstimator(), analysed)


@pytest.fixture(scope="module")
def before(analysed: Analysed) -> Estimates:
    return estimate_all(AgeEstimator(robust=False), analysed)


def test_the_face_set_is_every_adult_face_under_every_change(analysed: Analysed) -> None:
    assert len(analysed) == 12
    assert all(set(photos) == {"original", *CHANGES} for photos in analysed.values())
    lost = [
        (name, change)
        for name, photos in analysed.items()
        for change, (_, lm) in photos.items()
        if lm is None
    ]
    # Only shrinking or turning small faces loses them (the detector's limit, not the estimator's).
    assert all(change in {"half_size", "rotate_10deg"} for _, change in lost) and len(lost) <= 3, lost


def test_median_shift_is_at_most_2_years_for_every_change(after: Estimates) -> None:
    rows = stability_rows(after, THRESHOLD)
    assert {
        r["change"]: r["median_abs_shift"] for r in rows if r["median_abs_shift"] > MAX_MEDIAN_SHIFT
    } == {}


def test_no_accepted_face_is_refused_after_any_change(after: Estimates) -> None:
    rows = stability_rows(after, THRESHOLD)
    assert {r["change"]: r["refused_after"] for r in rows if r["refused_after"]} == {}


def test_no_change_lifts_a_face_well_under_the_threshold_over_it(after: Estimates) -> None:
    rows = stability_rows(after, THRESHOLD)
    assert {r["change"]: r["raised_over"] for r in rows if r["raised_over"]} == {}


def test_upward_shifts_are_bounded(before: Estimates, after: Estimates) -> None:
    """The unsafe direction at any threshold: how much older a change can make a face read.

    None of these adults reads 2 years under 25, so the target above cannot fail here; the largest
    upward shift is what would lift a younger face. Measured after: at most +3.0 years for every
    change but brightness +30 %, which clips highlights and reads t1_3 4.8 years older (32.7 -> 37.5;
    the single-view estimate's worst was +11.1, JPEG q10). A known shortfall (docs/responsible-use.md).
    """
    up_before = {r["change"]: r["max_up_shift"] for r in stability_rows(before, THRESHOLD)}
    up_after = {r["change"]: r["max_up_shift"] for r in stability_rows(after, THRESHOLD)}
    assert max(up_after.values()) < max(up_before.values())
    assert {c: up for c, up in up_after.items() if up > 3.5 and c != "brightness+30%"} == {}
    assert up_after["brightness+30%"] < 6.0


def test_the_unchanged_photos_are_not_read_older_overall(before: Estimates, after: Estimates) -> None:
    change = originals_change(before, after)
    # Measured: mean -0.51, max +6.0 (the astronaut, 29.4 -> 35.5; she was over 33), min -3.1.
    assert change["mean"] <= 0.0, change
    assert change["max"] < 7.0, change


def test_the_synthetic_subjects_and_real_adults_stay_admitted(after: Estimates) -> None:
    """The service's tests submit the synthetic subjects as adults; every face here is an adult."""
    originals = {name: ages["original"] for name, ages in after.items()}
    assert all(age is not None and age >= THRESHOLD + 1.0 for age in originals.values()), originals


def test_the_single_view_estimate_failed_these_targets(before: Estimates) -> None:
    """The measurement that motivated the change (bench/results/age_stability.json, "before")."""
    rows = {r["change"]: r for r in stability_rows(before, THRESHOLD)}
    assert rows["grayscale"]["median_abs_shift"] > MAX_MEDIAN_SHIFT
    assert rows["brightness+30%"]["median_abs_shift"] > MAX_MEDIAN_SHIFT
    assert sum(len(r["refused_after"]) for r in rows.values()) >= 5
