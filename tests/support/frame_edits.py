"""Edits of a rendered frame that take people out of it: what the quality report must not count.

`without_head` paints a person's head out (inpainted, as the scene fills a hole); `one_face_at_the_contact`
puts a single frontal face where two people meet, as if merged. Used by the face-finding tests and
bench/quality_detectors.py. Synthetic subjects only.
"""

from __future__ import annotations

import cv2
import numpy as np

from kiss_core.faces.analysis import DetectedFace


def without_head(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """`frame` with an ellipse over the face and hair of `landmarks` inpainted at quarter size."""
    width = float(np.linalg.norm(landmarks[16] - landmarks[0]))
    cx, cy = landmarks.mean(axis=0)
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.ellipse(
        mask, (round(cx), round(cy - 0.25 * width)), (round(0.8 * width), round(width)), 0, 0, 360, 255, -1
    )
    small = cv2.inpaint(
        cv2.resize(frame, None, fx=0.25, fy=0.25),
        cv2.resize(mask, None, fx=0.25, fy=0.25),
        5,
        cv2.INPAINT_TELEA,
    )
    painted = frame.copy()
    painted[mask > 0] = cv2.resize(small, (frame.shape[1], frame.shape[0]))[mask > 0]
    return painted


def one_face_at_the_contact(
    source: np.ndarray, face: DetectedFace, frame: np.ndarray, planned: dict[str, np.ndarray]
) -> np.ndarray:
    """`frame` with both heads painted out and `source`'s frontal `face` (an oval) pasted between them."""
    for landmarks in planned.values():
        frame = without_head(frame, landmarks)
    x0, y0, x1, y1 = (round(v) for v in face.box)
    pad = round(0.35 * (x1 - x0))
    patch = source[max(0, y0 - pad) : y1 + pad, max(0, x0 - pad) : x1 + pad]
    h, w = patch.shape[:2]
    oval = np.zeros((h, w), np.uint8)
    cv2.ellipse(oval, (w // 2, h // 2), (round(0.38 * w), round(0.46 * h)), 0, 0, 360, 255, -1)
    cx, cy = (planned["a"].mean(axis=0) + planned["b"].mean(axis=0)) / 2
    x, y = round(cx - w / 2), round(cy - h / 2 - 0.05 * w)
    pasted = frame.copy()
    pasted[y : y + h, x : x + w] = np.where(oval[:, :, None] > 0, patch, pasted[y : y + h, x : x + w])
    return pasted
