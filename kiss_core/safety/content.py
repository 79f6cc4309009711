"""The input content filter: NudeNet's detector on each photo; explicit photos are refused.

The model is the YOLOv8n-style `320n.onnx` shipped in the `nudenet` wheel (3.4.2), run through
onnxruntime directly with NudeNet's pre/post-processing, vectorised:

- letterbox: the photo is scaled so its longer side is 320 and padded with black at the right
  and bottom to 320x320 (NudeNet pads the full-size photo, then resizes: the same geometry),
  float32 in [0, 1], NCHW;
- output (1, 4 + 18, anchors): box centre/size in input pixels, then one sigmoid score per class;
- candidates scoring >= `min_score` (NudeNet: 0.25), non-maximum suppression at IoU 0.45, boxes
  mapped back to photo pixels.

Two deliberate differences from `nudenet.NudeDetector`, both on the side of safety:

- channel order: the network is an Ultralytics YOLOv8, trained on RGB. NudeNet 3.4.2 reads BGR
  with OpenCV, then swaps the channels twice (`cvtColor(RGBA2BGR)` on a 3-channel image, then
  `blobFromImage(swapRB=True)`) and so feeds BGR, a bug reported upstream
  (notAI-tech/NudeNet#203; NudeNet 3.0 fed RGB). We feed RGB.
- multi-label: NudeNet keeps only each anchor's best class and suppresses across classes, so an
  exposed region can hide behind an overlapping "covered" box. Here every class scores on its own
  and suppression is per class (Ultralytics' `multi_label` NMS), so `detect` lists a superset.

A photo is explicit when one of `EXPLICIT_LABELS` scores over the threshold (default 0.5).
Photos are checked as they are; nothing is written or kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kiss_core.errors import ExplicitContent
from kiss_core.media.images import require_rgb
from kiss_core.safety import package_file

CONTENT_MODEL_PACKAGE = "nudenet"
CONTENT_MODEL_FILE = "320n.onnx"
# nudenet 3.4.2's 320n.onnx: the model validated here (the labels below are its class order).
CONTENT_MODEL_SHA256 = "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f"
INPUT_SIZE = 320

LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
EXPLICIT_LABELS: frozenset[str] = frozenset(
    {
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "FEMALE_BREAST_EXPOSED",
        "ANUS_EXPOSED",
        "BUTTOCKS_EXPOSED",
    }
)
FACE_LABELS: frozenset[str] = frozenset({"FACE_FEMALE", "FACE_MALE"})


@dataclass(frozen=True)
class Detection:
    """One detected region: NudeNet class label, score in [0, 1], box (x0, y0, x1, y1) in photo pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]

    @property
    def explicit(self) -> bool:
        return self.label in EXPLICIT_LABELS


class ContentFilter:
    """NudeNet's detector on onnxruntime (CPU, one thread), loaded once per process. Thread-safe."""

    def __init__(self, threshold: float = 0.5, min_score: float = 0.25, iou: float = 0.45):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"`threshold` has to be in (0, 1) but is {threshold}")
        from kiss_core.safety import cpu_session

        self.threshold = float(threshold)
        self.min_score = float(min(min_score, threshold))
        self.iou = float(iou)
        self._session = cpu_session(
            package_file(CONTENT_MODEL_PACKAGE, CONTENT_MODEL_FILE, sha256=CONTENT_MODEL_SHA256)
        )
        self._input_name = self._session.get_inputs()[0].name

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Every region scoring at least `min_score`, best first (a face may carry two face labels)."""
        image = require_rgb(image, allow_empty=False)
        height, width = image.shape[:2]
        scale = INPUT_SIZE / max(height, width)
        resized_w, resized_h = max(1, round(width * scale)), max(1, round(height * scale))
        resized = cv2.resize(image, (resized_w, resized_h), interpolation=cv2.INTER_LINEAR)
        batch = np.zeros((1, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
        batch[0, :, :resized_h, :resized_w] = resized.transpose(2, 0, 1) * np.float32(1 / 255)
        output = self._session.run(None, {self._input_name: batch})[0][0]  # (4 + classes, anchors)
        if output.shape[0] != 4 + len(LABELS):
            raise ValueError(f"the content model returned {output.shape}; {4 + len(LABELS)} rows expected")
        return self._decode(output, width, height, scale)

    def _decode(self, output: np.ndarray, width: int, height: int, scale: float) -> list[Detection]:
        scores = output[4:]  # (classes, anchors)
        classes, anchors = np.nonzero(scores >= self.min_score)
        if classes.size == 0:
            return []
        cx, cy, w, h = (output[i, anchors] / scale for i in range(4))
        x0 = np.clip(cx - w / 2, 0, width)
        y0 = np.clip(cy - h / 2, 0, height)
        x1 = np.clip(cx + w / 2, 0, width)
        y1 = np.clip(cy + h / 2, 0, height)
        candidate_scores = scores[classes, anchors]
        boxes = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)  # OpenCV's NMS takes x, y, w, h
        keep = cv2.dnn.NMSBoxesBatched(
            boxes.tolist(), candidate_scores.tolist(), classes.tolist(), self.min_score, self.iou
        )
        detections = [
            Detection(
                label=LABELS[int(classes[i])],
                score=float(candidate_scores[i]),
                box=(float(x0[i]), float(y0[i]), float(x1[i]), float(y1[i])),
            )
            for i in np.asarray(keep, dtype=np.int64).reshape(-1)
        ]
        return sorted(detections, key=lambda d: -d.score)

    def explicit(self, detections: list[Detection]) -> list[Detection]:
        """The detections that make a photo explicit: an exposed class scoring over the threshold."""
        return [d for d in detections if d.explicit and d.score > self.threshold]

    def check(self, image: np.ndarray, subject: str) -> None:
        """Raise `ExplicitContent` (422) naming the subject when the photo shows explicit content."""
        found = self.explicit(self.detect(image))
        if found:
            labels = ", ".join(sorted({d.label.lower().replace("_", " ") for d in found}))
            raise ExplicitContent(
                f"the photo of subject {subject!r} appears to show explicit content ({labels}); "
                "send a photo in which the person is clothed",
                subject,
                [{"label": d.label, "score": round(d.score, 3)} for d in found],
            )
