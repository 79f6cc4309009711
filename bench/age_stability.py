"""How far the age gate's estimate moves under ordinary photo changes (issue 17, item 2: the measurement).

    .venv/bin/python bench/age_stability.py

Faces: every adult face available here: the six adults of insightface's t1.jpg (each cropped with a
face-sized margin), scikit-image's astronaut, insightface's Tom_Hanks_54745.png (analysis only, as
everywhere in the tests) and the four synthetic subjects. Changes: grayscale (saved as JPEG q90), JPEG
quality 10, half and double size, mirror, brightness +/-30 %, a 10-degree rotation. Each changed photo
goes through the service's own analysis (detection, 68 landmarks) and the production AgeEstimator, as a
submission would.

Prints one table (median and largest absolute shift per change, and the faces a change moves across the
gate's threshold in either direction) and writes bench/results/age_stability.json with every estimate.
No timing: the figures are deterministic for a given set of wheels.
"""

from __future__ import annotations

import io
import json
import platform
import sys
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


def main() -> int:
    settings = Settings()
    analyzer = DlibFaceAnalyzer(settings.faces)
    estimator = AgeEstimator(mirror=settings.safety.age_gate.mirror)
    threshold = settings.safety.age_gate.min_age

    def estimate(image: np.ndarray) -> float | None:
        try:
            analysis = analyzer.analyze(image, "a")
        except ClientError:  # the change lost the face (e.g. too small at half size)
            return None
        return estimator.estimate(image, np.asarray(analysis.landmarks, np.float32))

    estimates: dict[str, dict[str, float | None]] = {}
    for name, image in adult_faces(analyzer).items():
        estimates[name] = {"original": estimate(image)}
        for change, apply in CHANGES.items():
            estimates[name][change] = estimate(apply(image))

    rows = []
    print(f"age gate threshold {threshold:g} years; {len(estimates)} adult faces")
    header = f"{'change':<16}{'faces':>6}{'median |shift|':>16}{'max |shift|':>13}"
    print(header + "  crossings (original -> changed)")
    for change in CHANGES:
        shifts, crossings = [], []
        for name, ages in estimates.items():
            before, after = ages["original"], ages[change]
            if before is None or after is None:
                continue
            shifts.append(after - before)
            if (before >= threshold) != (after >= threshold):
                crossings.append(f"{name} {before:.1f}->{after:.1f}")
        magnitudes = np.abs(np.asarray(shifts))
        row = {
            "change": change,
            "faces": len(shifts),
            "median_abs_shift": round(float(np.median(magnitudes)), 2),
            "max_abs_shift": round(float(magnitudes.max()), 2),
            "crossings": crossings,
        }
        rows.append(row)
        print(
            f"{change:<16}{row['faces']:>6}{row['median_abs_shift']:>16.2f}{row['max_abs_shift']:>13.2f}  "
            + (", ".join(crossings) or "-")
        )
    out = ROOT / "bench" / "results" / "age_stability.json"
    report = {
        "machine": platform.platform(),
        "threshold": threshold,
        "mirror": estimator.mirror,
        "rows": rows,
        "estimates": {
            name: {change: None if age is None else round(age, 2) for change, age in ages.items()}
            for name, ages in estimates.items()
        },
    }
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
