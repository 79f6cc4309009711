"""What a good preview scores, and every way a report falls short of it."""

from __future__ import annotations

from dataclasses import dataclass

from kiss_core.schemas import QualityReport


@dataclass(frozen=True)
class QualityThresholds:
    """What a good preview scores; the README's metric table says why each number was chosen."""

    similarity_mean: float = 0.92  # = same_person_threshold: on average each face is still that person
    similarity_min: float = 0.85  # worst checked frame (pucker, turn, partial cover at the contact)
    visible_share: float = 0.8  # each face found in 4 of 5 checked frames (at the hold: looked for alone)
    both_found: float = 0.8  # both faces found in the same frame, in 4 of 5 checked frames
    mouth_distance: float = 0.3  # lips (or lips and cheek) touch: under a third of a face width apart
    seam: float = 1.8  # boundary/interior gradient at the contact: the 12 synthetic jobs read 1.35-1.77
    flicker_mean: float = 0.5  # luma levels; about 1 is where a viewer starts to see shimmer
    flicker_p95: float = 1.0
    lighting_ratio: float = 0.7  # harmonisation removes at least 30 % of a visible skin-tone gap ...
    lighting_floor: float = 2.0  # ... unless the gap is already below 2 ΔE (imperceptible)


def quality_problems(report: QualityReport, limits: QualityThresholds | None = None) -> list[str]:
    """Every way `report` falls short of `limits`, one readable line each; empty when it passes."""
    limits = limits or QualityThresholds()
    problems = []
    for subject in report.subjects:
        if subject.similarity_mean is None or subject.similarity_mean < limits.similarity_mean:
            problems.append(
                f"{subject.subject}: identity mean {subject.similarity_mean} < {limits.similarity_mean}"
            )
        if subject.similarity_min is None or subject.similarity_min < limits.similarity_min:
            problems.append(
                f"{subject.subject}: identity min {subject.similarity_min} < {limits.similarity_min}"
            )
        if subject.visible_share < limits.visible_share:
            problems.append(
                f"{subject.subject}: visible in {subject.visible_share:.2f} < {limits.visible_share}"
            )
    if report.both_found is not None and report.both_found < limits.both_found:
        problems.append(
            f"both people found in {report.both_found:.2f} < {limits.both_found} of checked frames"
        )
    contact = report.contact
    if contact is None or contact.mouth_distance is None or contact.mouth_distance > limits.mouth_distance:
        distance = None if contact is None else contact.mouth_distance
        problems.append(f"contact: mouth distance {distance} > {limits.mouth_distance}")
    if contact is not None and contact.seam is not None and contact.seam > limits.seam:
        problems.append(f"contact: seam {contact.seam:.2f} > {limits.seam}")
    flicker = report.flicker
    if flicker is None or flicker.mean > limits.flicker_mean or flicker.p95 > limits.flicker_p95:
        problems.append(f"flicker: {flicker} above mean {limits.flicker_mean} / p95 {limits.flicker_p95}")
    lighting = report.lighting
    before = None if lighting is None else lighting.delta_e_input
    after = None if lighting is None else lighting.delta_e_output
    if after is None or after > max(limits.lighting_floor, limits.lighting_ratio * (before or 0.0)):
        problems.append(f"lighting: ΔE {before} -> {after}, not below {limits.lighting_ratio} x before")
    return problems
