"""The visible "AI-generated" mark: anti-aliased text on a dark translucent box in one corner.

The patch is rendered once per job (text coverage from cv2.putText with LINE_AA) and stored as
fixed-point alpha and premultiplied colour, so marking a frame is one small integer blend over the
patch's rectangle and nothing else in the frame is touched.
"""

from __future__ import annotations

import cv2
import numpy as np

from kiss_core.settings import LabelSettings

_FONT = cv2.FONT_HERSHEY_DUPLEX
_BOX_SHARE = 0.6
"""Backing box opacity as a share of the text's: dark enough to read on white, light enough to see through."""
_TEXT_RGB = (255, 255, 255)
_BOX_RGB = (0, 0, 0)


class FrameLabeler:
    """Draws the mark into frames of one size; build once per job from `LabelSettings`."""

    def __init__(self, settings: LabelSettings, width: int, height: int):
        if width < 16 or height < 16:
            raise ValueError(f"frames must be at least 16x16 to label but are {width}x{height}")
        self.settings = settings
        self.width, self.height = width, height
        self.origin: tuple[int, int] = (0, 0)
        self._alpha: np.ndarray | None = None  # (h, w, 1) uint32, 0..256
        self._color: np.ndarray | None = None  # (h, w, 3) uint32, premultiplied colour * 256
        if settings.enabled and settings.opacity > 0:
            self._render()

    @property
    def active(self) -> bool:
        """Whether `apply` changes frames (enabled and not fully transparent)."""
        return self._alpha is not None

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The patch rectangle (x0, y0, x1, y1) in frame pixels; empty when inactive."""
        if self._alpha is None:
            return (0, 0, 0, 0)
        x0, y0 = self.origin
        return (x0, y0, x0 + self._alpha.shape[1], y0 + self._alpha.shape[0])

    def _render(self) -> None:
        s = self.settings
        cap_height = max(6.0, s.scale * self.height)
        # Hershey fonts' getTextSize height is the capitals' height at the given scale.
        font_scale = cap_height / cv2.getTextSize("H", _FONT, 1.0, 1)[0][1]
        thickness = max(1, round(cap_height / 12))
        (text_w, text_h), baseline = cv2.getTextSize(s.text, _FONT, font_scale, thickness)
        pad = max(2, round(cap_height * 0.4))
        patch_w = min(self.width, text_w + 2 * pad)
        patch_h = min(self.height, text_h + baseline + 2 * pad)
        coverage = np.zeros((patch_h, patch_w), np.uint8)
        cv2.putText(coverage, s.text, (pad, pad + text_h), _FONT, font_scale, 255, thickness, cv2.LINE_AA)
        text_a = coverage.astype(np.float32) / 255 * s.opacity
        box_a = _BOX_SHARE * s.opacity
        alpha = text_a + box_a * (1 - text_a)  # text over box
        text_rgb, box_rgb = np.asarray(_TEXT_RGB, np.float32), np.asarray(_BOX_RGB, np.float32)
        color = text_a[..., None] * text_rgb + (box_a * (1 - text_a))[..., None] * box_rgb
        self._alpha = np.round(alpha * 256)[..., None].astype(np.uint32)
        self._color = np.round(color * 256).astype(np.uint32)
        margin = round(s.margin * self.height)
        left = margin if s.position.endswith("left") else self.width - patch_w - margin
        top = margin if s.position.startswith("top") else self.height - patch_h - margin
        self.origin = (max(0, left), max(0, top))

    def apply(self, frame: np.ndarray) -> None:
        """Blend the mark into an (H, W, 3) uint8 RGB frame in place; only the patch rectangle changes."""
        if self._alpha is None or self._color is None:
            return
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"frame must be RGB uint8 ({self.height}, {self.width}, 3) but is {frame.dtype} {frame.shape}"
            )
        x0, y0, x1, y1 = self.box
        roi = frame[y0:y1, x0:x1]
        roi[...] = (roi * (256 - self._alpha) + self._color + 128) >> 8
