"""Short clips of natural, face-free pictures with motion, for labelling and watermark tests.

scikit-image's chelsea (a cat) as a static backdrop, its coffee cup as an object moving across it,
the way the preview's heads move over a still shared background. No person appears in them.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from tests.support.photos import skimage_path


@functools.cache
def _picture(name: str, width: int, height: int) -> np.ndarray:
    image = cv2.cvtColor(cv2.imread(str(skimage_path(name)), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def moving_clip(frames: int = 48, width: int = 832, height: int = 480) -> list[np.ndarray]:
    """`frames` RGB uint8 frames: the cup glides right (6 px a frame) and bobs over the cat."""
    backdrop = _picture("chelsea.png", width, height)
    cup_w, cup_h = width // 4, height // 3
    cup = _picture("coffee.png", cup_w, cup_h)
    clip = []
    for t in range(frames):
        frame = backdrop.copy()
        x = (width // 8 + 6 * t) % (width - cup_w)
        y = height // 3 + round(height / 24 * np.sin(t / 5))
        frame[y : y + cup_h, x : x + cup_w] = cup
        clip.append(frame)
    return clip
