"""How far the age gate's estimate moves under ordinary photo changes (issue 17, item 2).

    .venv/bin/python bench/age_stability.py

Faces: every adult face available here: the six adults of insightface's t1.jpg (each cropped with a
face-sized margin), scikit-image's astronaut, insightface's Tom_Hanks_54745.png (analysis only, as
everywhere in the tests) and the four synthetic subjects. Changes: grayscale (saved as JPEG q90), JPEG
quality 10, half and double size, mirror, brightness +/-30 %, a 10-degree rotation. Each changed photo
goes through the service's own analysis (detection, 68 landmarks) and the age estimator, as a
submission would.

Two estimators over the same analyses: "before" is the single-view estimate the gate used until issue
17 (`AgeEstimator(robust=False)`: the chip and its mirror image), "after" the production estimator
(the robust aggregate of kiss_core.safety.age_views). Prints one table per estimator (median, largest
and largest upward shift per change; accepted faces refused after the change; faces more than 2 years
under the threshold raised to it), the change of the originals' estimates and the time per estimate,
and writes bench/results/age_stability.json with every estimate.

This module is also the shared definition of the face set, the changes and the figures:
tests/unit/test_safety_age_stability.py imports it and asserts the targets on the same numbers.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kiss_core.errors import ClientError  # noqa: E402
from kiss_core.faces.analysis import DlibFaceAnalyzer  # noqa: E402
from kiss_core.faces.synthetic import synthetic_subject  # noqa: E402
from kiss_core.safety.age import AgeEstimator  # noqa: E402
from kiss_core.settings import Settings  # noqa: E402
from tests.support.photos import astronaut_rgb, load_rgb, package_file, t1_rgb  # noqa: E402

SYNTHETIC_SUBJECTS = 4


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.array(Image.open(buffer).convert("RGB"))


def _resized(image: np.ndarray, factor: float) -> np.ndarray:
    pil = Image.fromarray(image)
    size = (round(pil.width * factor), round(pil.height * factor))
    return np.array(pil.resize(size, Image.Resampling.LANCZOS))


def _brightness(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda image: np.array(ImageEnhance.Brightness(Image.fromarray(image)).enhance(factor))


def _rotated(image: np.ndarray) -> np.ndarray:
    pil = Image.fromarray(image)
    return np.array(pil.rotate(10, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(128, 128, 128)))


CHANGES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "grayscale": lambda image: _jpeg(np.array(ImageOps.grayscale(Image.fromarray(image)).convert("RGB")), 90),
    "jpeg_q10": lambda image: _jpeg(image, 10),
    "half_size": lambda image: _resized(image, 0.5),
    "double_size": lambda image: _resized(image, 2.0),
    "mirror": lambda image: np.ascontiguousarray(image[:, ::-1]),
    "brightness+30%": _brightness(1.3),
    "brightness-30%": _brightness(0.7),
    "rotate_10deg": _rotated,
}


def adult_faces(analyzer: DlibFaceAnalyzer) -> dict[str, np.ndarray]:
    """One photo per adult face, each holding that face as its largest."""
    faces: dict[str, np.ndarray] = {}
    t1 = t1_rgb()
    for index, face in enumerate(sorted(analyzer.detect(t1), key=lambda f: f.box[0])):
        x0, y0, x1, y1 = (int(v) for v in face.box)
        width, height = x1 - x0, y1 - y0
        crop = t1[max(0, y0 - height) : y1 + height, max(0, x0 - width) : x1 + width]
        faces[f"t1_{index}"] = np.ascontiguousarray(crop)
    faces["astronaut"] = astronaut_rgb()
    faces["tom_hanks"] = load_rgb(package_file("insightface", "data/images/Tom_Hanks_54745.png"))
    for index in range(SYNTHETIC_SUBJECTS):
        faces[f"synthetic_{index}"] = synthetic_subject(index)
    return faces


MARGIN = 2.0  # years: "well under the threshold" for the raised-over check
Analysed = dict[str, dict[str, tuple[np.ndarray, np.ndarray | None]]]
Estimates = dict[str, dict[str, float | None]]


def analysed_faces(analyzer: DlibFaceAnalyzer) -> Analysed:
    """Every face in its original form and after each change, with the landmarks the service finds
    there (None: the change lost the face, e.g. too small at half size)."""
    out: Analysed = {}
    for name, image in adult_faces(analyzer).items():
        out[name] = {}
        for change, photo in {"original": image, **{c: f(image) for c, f in CHANGES.items()}}.items():
            try:
                landmarks = np.asarray(analyzer.analyze(photo, "a").landmarks, np.float32)
            except ClientError:
                landmarks = None
            out[name][change] = (photo, landmarks)
    return out


def estimate_all(estimator: AgeEstimator, analysed: Analysed) -> Estimates:
    return {
        name: {
            change: None if landmarks is None else estimator.estimate(photo, landmarks)
            for change, (photo, landmarks) in photos.items()
        }
        for name, photos in analysed.items()
    }


def stability_rows(estimates: Estimates, threshold: float, margin: float = MARGIN) -> list[dict]:
    """Per change: faces read, median / largest / largest upward shift (years), the faces accepted in
    their original form and refused after it, the faces more than `margin` under `threshold` raised to it."""
    rows = []
    for change in CHANGES:
        shifts, refused, raised = [], [], []
        for name, ages in estimates.items():
            before, after = ages["original"], ages[change]
            if before is None or after is None:
                continue
            shifts.append(after - before)
            if before >= threshold > after:
                refused.append(f"{name} {before:.1f}->{after:.1f}")
            if before < threshold - margin and after >= threshold:
                raised.append(f"{name} {before:.1f}->{after:.1f}")
        values = np.asarray(shifts)
        rows.append(
            {
                "change": change,
                "faces": len(shifts),
                "median_abs_shift": round(float(np.median(np.abs(values))), 2),
                "max_abs_shift": round(float(np.abs(values).max()), 2),
                "max_up_shift": round(float(values.max()), 2),
                "refused_after": refused,
                "raised_over": raised,
            }
        )
    return rows


def originals_change(before: Estimates, after: Estimates) -> dict[str, float]:
    """How the new estimator moves the unchanged photos: mean, largest rise and largest fall (years)."""
    diff = np.array([after[n]["original"] - before[n]["original"] for n in before])  # type: ignore[operator]
    return {
        "mean": round(float(diff.mean()), 2),
        "max": round(float(diff.max()), 2),
        "min": round(float(diff.min()), 2),
    }


def seconds_per_estimate(estimator: AgeEstimator, analysed: Analysed, rounds: int = 5) -> float:
    """Best-of-`rounds` mean time of one estimate over the original photos (one thread)."""
    faces = [photos["original"] for photos in analysed.values()]
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for photo, landmarks in faces:
            estimator.estimate(photo, landmarks)  # type: ignore[arg-type]
        best = min(best, (time.perf_counter() - start) / len(faces))
    return best


def generated_frames(settings: Settings, jobs: list[tuple[tuple[int, int], str, str]]) -> list[dict]:
    """The output check's age readings on generated frames, before and after, for each preview job
    (pair of synthetic subjects, style, size): every full face the check reads, by person. Each job
    runs once with the production check; the faces it read are estimated by both estimators."""
    import tempfile

    from kiss_core.keys import new_job_id
    from kiss_core.safety.output_check import face_owner
    from kiss_core.schemas import StageRequest, VideoParams
    from tests.support.studio import SyntheticStudio

    single = AgeEstimator(mirror=settings.safety.age_gate.mirror, robust=False)
    out = []
    with tempfile.TemporaryDirectory() as root:
        studio = SyntheticStudio(settings, root)
        checker = studio.producer.output_checker
        check = checker.check
        for (a, b), style, size in jobs:
            readings: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}

            def recording(frames, faces_of, planned, readings=readings):  # type: ignore[no-untyped-def]
                for index, frame in frames.items():
                    for face in faces_of(index, frame):
                        owner = face_owner(face.box, planned.get(index, {}))
                        if owner is None:
                            continue
                        for label, estimator in (("before", single), ("after", checker.age_estimator)):
                            try:
                                age = estimator.estimate(frame, face.landmarks)
                            except ValueError:
                                continue
                            readings[label].setdefault(owner or "unplanned", []).append(age)
                return check(frames, faces_of, planned)

            checker.check = recording  # type: ignore[method-assign]
            pair = studio.pair(a, b)
            job_id = new_job_id()
            keys = {s: f"inputs/{job_id}/{s}.png" for s in pair.pngs}
            for subject, key in keys.items():
                studio.store.put(key, pair.pngs[subject], "image/png")
            params = VideoParams(style=style, seconds=5, fps=24 if size == "832x480" else 12, size=size)
            request = StageRequest(
                job_id=job_id,
                params=params,
                input_keys=keys,
                analyses=[pair.analyses["a"], pair.analyses["b"]],
            )
            try:
                studio.producer.produce(request, pair.conditioning)
                blocked = None
            except ClientError as error:
                blocked = error.code
            row: dict = {"pair": f"{a}+{b}", "style": style, "size": size, "blocked_after": blocked}
            for label, by_person in readings.items():
                row[label] = {
                    person: {
                        "faces": len(ages),
                        "median": round(float(np.median(ages)), 2),
                        "min": round(min(ages), 2),
                    }
                    for person, ages in sorted(by_person.items())
                }
            out.append(row)
            print(
                f"{row['pair']:>4} {style:<9}{size:>8}  "
                + "  ".join(
                    f"{label}: "
                    + ", ".join(
                        f"{p} med {v['median']:.1f} min {v['min']:.1f}" for p, v in row[label].items()
                    )
                    for label in ("before", "after")
                )
                + (f"  BLOCKED {blocked}" if blocked else "")
            )
    checker.check = check  # type: ignore[method-assign]
    return out


def _print_table(label: str, rows: list[dict]) -> None:
    print(f"\n{label}")
    print(
        f"{'change':<16}{'faces':>6}{'median |shift|':>16}{'max |shift|':>13}{'max up':>8}"
        "  refused after / raised over"
    )
    for row in rows:
        notes = row["refused_after"] + [f"RAISED {r}" for r in row["raised_over"]]
        print(
            f"{row['change']:<16}{row['faces']:>6}{row['median_abs_shift']:>16.2f}{row['max_abs_shift']:>13.2f}"
            f"{row['max_up_shift']:>+8.2f}  " + (", ".join(notes) or "-")
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--generated",
        action="store_true",
        help="also read the generated frames of 16 preview jobs (4 pairs x 4 styles, 832x480, 5 s) and"
        " 8 small ones (416x240, romantic, pair 0+1) as the output check does (a few minutes)",
    )
    args = parser.parse_args()
    settings = Settings()
    analyzer = DlibFaceAnalyzer(settings.faces)
    threshold = settings.safety.age_gate.min_age
    mirror = settings.safety.age_gate.mirror
    estimators = {"before": AgeEstimator(mirror=mirror, robust=False), "after": AgeEstimator(mirror=mirror)}
    analysed = analysed_faces(analyzer)
    estimates = {label: estimate_all(e, analysed) for label, e in estimators.items()}
    rows = {label: stability_rows(e, threshold) for label, e in estimates.items()}
    timing = {label: round(seconds_per_estimate(e, analysed) * 1000, 1) for label, e in estimators.items()}
    print(f"age gate threshold {threshold:g} years; {len(analysed)} adult faces")
    for label in estimators:
        _print_table(
            f"{label}: {'single view' if label == 'before' else 'robust aggregate'}"
            f" ({timing[label]} ms per estimate)",
            rows[label],
        )
    change = originals_change(estimates["before"], estimates["after"])
    print(
        f"\noriginals, after - before: mean {change['mean']:+.2f}, max {change['max']:+.2f},"
        f" min {change['min']:+.2f} years"
    )
    print(
        "originals:",
        ", ".join(
            f"{n} {estimates['before'][n]['original']:.1f}->{estimates['after'][n]['original']:.1f}"
            for n in analysed
        ),
    )
    generated = None
    if args.generated:
        print("\ngenerated frames: full faces read by the output check, per person (median, lowest)")
        pairs = ((0, 1), (2, 3), (1, 2), (3, 0))
        jobs = [(p, style, "832x480") for p in pairs for style in ("peck", "romantic", "french", "cheek")]
        jobs += [((0, 1), "romantic", "416x240")] * 8
        generated = generated_frames(settings, jobs)
    out = ROOT / "bench" / "results" / "age_stability.json"
    report = {
        "machine": platform.platform(),
        "threshold": threshold,
        "margin": MARGIN,
        "mirror": mirror,
        "ms_per_estimate": timing,
        "originals_after_minus_before": change,
        "rows": rows,
        "generated_frames": generated,
        "estimates": {
            label: {
                name: {c: None if age is None else round(age, 2) for c, age in ages.items()}
                for name, ages in per_face.items()
            }
            for label, per_face in estimates.items()
        },
    }
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
