"""MediaPipe's full-range face detector, decoded here: finds faces turned well past what HOG finds.

dlib's HOG detector is a frontal detector: it misses faces turned past ~40°, and the kiss styles turn
heads 30-52°. The full-range BlazeFace model shipped in the mediapipe wheel (run by LiteRT, see
kiss_core.faces.mediapipe_models) finds profiles too, in ~3 ms a frame on one core. The model only
gives raw tensors; this module does what MediaPipe's graph around it does
(mediapipe/modules/face_detection/face_detection_full_range.pbtxt and face_detection.pbtxt):

- ImageToTensorCalculator: the frame letterboxed to a centred square (`keep_aspect_ratio`, border
  zero = black), resized to 192x192, values mapped to [-1, 1];
- SsdAnchorsCalculator: one layer, stride 4, aspect ratio 1, `fixed_anchor_size` -> 48x48 = 2304
  anchors of size 1 centred at ((x + 0.5) / 48, (y + 0.5) / 48);
- TensorsToDetectionsCalculator: 16 values per anchor (box centre x/y, w, h, then 6 keypoints x/y),
  each divided by the scale 192 and multiplied by the anchor size (1), centres offset by the anchor
  centre (`reverse_output_order`: x before y); score = sigmoid(clip(logit, -100, 100)), kept >= 0.6;
- NonMaxSuppressionCalculator: WEIGHTED, IoU > 0.3: overlapping detections are averaged, weighted by
  score, and keep the best one's score;
- DetectionProjectionCalculator: back from the square to the frame's pixels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from kiss_core.faces.mediapipe_models import FACE_DETECTION_FULL_RANGE, TfliteModel, tflite_model
from kiss_core.media.images import require_rgb

INPUT_SIZE = 192  # tensor_width/height of the full-range model
STRIDE = 4  # its one anchor layer: 192 / 4 = 48 cells a side
SCALE = 192.0  # x_scale, y_scale, w_scale, h_scale
MIN_SCORE = 0.6  # min_score_thresh
SUPPRESSION_IOU = 0.3  # min_suppression_threshold
SCORE_CLIP = 100.0  # score_clipping_thresh
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")  # the person's sides


@dataclass(frozen=True)
class FullRangeFace:
    """One detection in frame pixels: box (x0, y0, x1, y1), score 0..1, 6 keypoints (x, y) in
    `KEYPOINTS` order. The box is MediaPipe's framing (eyebrows to chin), not dlib's."""

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])


@functools.cache
def ssd_anchors() -> np.ndarray:
    """(2304, 2) anchor centres (x, y) in 0..1, row by row (the model's output order); sizes are all 1."""
    cells = INPUT_SIZE // STRIDE
    ys, xs = np.mgrid[0:cells, 0:cells].astype(np.float64)
    return np.stack([(xs.ravel() + 0.5) / cells, (ys.ravel() + 0.5) / cells], axis=1)


def letterbox(image: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, float, tuple[float, float]]:
    """The model's input for `image`: float32 (1, size, size, 3) in [-1, 1], the frame centred on black.

    Returns the tensor, the side of the square in frame pixels and the square's top-left corner in
    frame pixels (negative where the frame is padded), so a point p in 0..1 maps to corner + p * side.
    INTER_AREA rather than MediaPipe's bilinear warp: a 832 px frame shrinks 4.3x and bilinear aliases.
    """
    rgb = require_rgb(image)
    height, width = rgb.shape[:2]
    side = max(height, width)
    left, top = (side - width) // 2, (side - height) // 2
    square = np.zeros((side, side, 3), dtype=np.uint8)  # padded first: both axes scale exactly alike
    square[top : top + height, left : left + width] = rgb
    small = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)
    tensor = small.astype(np.float32)[None] * (2.0 / 255.0) - 1.0
    return tensor, float(side), (-float(left), -float(top))


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, min_score: float = MIN_SCORE) -> np.ndarray:
    """Detections above `min_score` as rows (x0, y0, x1, y1, score, 12 keypoint values) in 0..1 of the square.

    `raw_boxes` (2304, 16) and `raw_scores` (2304,) are the model's outputs for one image.
    """
    anchors = ssd_anchors()
    raw = np.asarray(raw_boxes, dtype=np.float64).reshape(len(anchors), 16)
    logits = np.clip(np.asarray(raw_scores, dtype=np.float64).reshape(len(anchors)), -SCORE_CLIP, SCORE_CLIP)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = scores >= min_score
    raw, anchor, scores = raw[keep], anchors[keep], scores[keep]
    centre = raw[:, 0:2] / SCALE + anchor
    half = raw[:, 2:4] / SCALE / 2
    keypoints = raw[:, 4:16].reshape(-1, 6, 2) / SCALE + anchor[:, None, :]
    return np.concatenate([centre - half, centre + half, scores[:, None], keypoints.reshape(-1, 12)], axis=1)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one (x0, y0, x1, y1) box with each of `boxes` (N, 4)."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def weighted_nms(rows: np.ndarray, threshold: float = SUPPRESSION_IOU) -> np.ndarray:
    """MediaPipe's WEIGHTED suppression of `decode`'s rows: best score first, every remaining row
    overlapping it by IoU > `threshold` is merged into it (boxes and keypoints averaged, weighted by
    score; the best score kept), until none remain. One face gives ~10 overlapping anchors."""
    remaining = rows[np.argsort(-rows[:, 4], kind="stable")]
    merged = []
    while len(remaining):
        overlap = iou(remaining[0, :4], remaining[:, :4]) > threshold
        overlap[0] = True
        group = remaining[overlap]
        weights = group[:, 4:5]
        row = (group * weights).sum(axis=0) / weights.sum()
        row[4] = group[0, 4]
        merged.append(row)
        remaining = remaining[~overlap]
    return np.array(merged).reshape(-1, rows.shape[1])


class FullRangeFaceDetector:
    """Faces of any turn in RGB frames, as MediaPipe's FaceDetectionFullRange graph finds them."""

    def __init__(self, min_score: float = MIN_SCORE, model: TfliteModel | None = None):
        self.min_score = min_score
        self.model = model or tflite_model(FACE_DETECTION_FULL_RANGE)

    def detect(self, image: np.ndarray) -> list[FullRangeFace]:
        """Every face in `image` (any size), surest first, in the image's pixels."""
        tensor, side, (cx, cy) = letterbox(image)
        outputs = self.model(tensor)
        raw_boxes = next(o for o in outputs if o.shape[-1] == 16)
        raw_scores = next(o for o in outputs if o.shape[-1] == 1)
        rows = weighted_nms(decode(raw_boxes, raw_scores, self.min_score))
        faces = []
        for row in rows:
            x0, y0, x1, y1 = (float(v) for v in row[:4] * side + (cx, cy, cx, cy))
            keypoints = row[5:17].reshape(6, 2) * side + (cx, cy)
            faces.append(FullRangeFace(box=(x0, y0, x1, y1), score=float(row[4]), keypoints=keypoints))
        return faces


@functools.cache
def full_range_detector() -> FullRangeFaceDetector:
    """The process's detector (its interpreter is the process's one copy, see `tflite_model`)."""
    return FullRangeFaceDetector()
