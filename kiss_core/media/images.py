"""Turning uploaded bytes into an RGB uint8 array, refusing what a client should not be able to send.

Every refusal is a typed client error that names the subject and the bad value, so nothing a
client uploads (random bytes, a decompression bomb, an animated GIF) becomes a 500.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kiss_core.errors import ImageTooLarge, ImageTooSmall, ImageUnreadable, UnsupportedImage
from kiss_core.settings import LimitSettings

# MPO is the multi-picture JPEG that many phone cameras write; its first frame is the photo.
SUPPORTED_FORMATS: frozenset[str] = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF"})
_MULTI_FRAME_OK: frozenset[str] = frozenset({"MPO"})
_SIXTEEN_BIT_MODES: frozenset[str] = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def _who(subject: str | None) -> str:
    return f"the photo of subject {subject!r}" if subject is not None else "the photo"


def decode_image(data: bytes, limits: LimitSettings, subject: str | None = None) -> np.ndarray:
    """Decode an uploaded photo to an EXIF-oriented RGB uint8 array (H, W, 3), or raise a ClientError.

    The pixel count is checked from the header before any pixel is decoded, so a small file that
    claims to be huge costs nothing.
    """
    who = _who(subject)
    if len(data) > limits.max_upload_bytes:
        raise ImageTooLarge(
            f"{who} is {len(data)} bytes; at most {limits.max_upload_bytes} bytes are accepted", subject
        )
    if not data:
        raise ImageUnreadable(f"{who} is empty (0 bytes)", subject)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"{who} claims too many pixels: {exc}", subject) from exc
    except UnidentifiedImageError as exc:
        raise ImageUnreadable(
            f"{who} is not an image this service can read ({len(data)} bytes, starts with {data[:8]!r})",
            subject,
        ) from exc
    except Exception as exc:  # Pillow plugins raise many types on corrupt headers.
        raise ImageUnreadable(f"{who} could not be read: {type(exc).__name__}: {exc}", subject) from exc

    with image:
        fmt = image.format or "unknown"
        if fmt not in SUPPORTED_FORMATS:
            raise UnsupportedImage(
                f"{who} is in format {fmt}; supported are {', '.join(sorted(SUPPORTED_FORMATS - {'MPO'}))}",
                subject,
            )
        width, height = image.size
        if width * height > limits.max_image_pixels:
            raise ImageTooLarge(
                f"{who} is {width}x{height} = {width * height} pixels; "
                f"at most {limits.max_image_pixels} pixels are accepted",
                subject,
            )
        if min(width, height) < limits.min_image_side:
            raise ImageTooSmall(
                f"{who} is {width}x{height} pixels; each side must be at least {limits.min_image_side}",
                subject,
            )
        frames = getattr(image, "n_frames", 1)
        if frames > 1 and fmt not in _MULTI_FRAME_OK:
            raise UnsupportedImage(
                f"{who} is an animated or multi-page {fmt} with {frames} frames; send a single still photo",
                subject,
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.load()
                oriented = _orient(image)
                rgb = _to_rgb(oriented)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(f"{who} claims too many pixels: {exc}", subject) from exc
        except UnsupportedImage as exc:
            raise UnsupportedImage(f"{who}: {exc.detail}", subject) from exc
        except Exception as exc:  # truncated data, corrupt chunks, bad compression streams
            raise ImageUnreadable(
                f"{who} ({fmt}, {width}x{height}) could not be decoded: {type(exc).__name__}: {exc}", subject
            ) from exc
    return rgb


def _orient(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; a broken EXIF block is ignored rather than refused."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        return image


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode to RGB uint8: transparency is composited on white, 16-bit is scaled, not clipped."""
    mode = image.mode
    if mode == "RGB":
        return np.array(image, dtype=np.uint8)
    if mode in _SIXTEEN_BIT_MODES or mode in {"I", "F"}:
        values = np.asarray(image).astype(np.float64)
        top = values.max(initial=0.0)
        scale = 1.0 if top <= 255 else (257.0 if top <= 65535 else top / 255.0)
        gray = np.clip(np.round(values / scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
    try:
        return np.array(image.convert("RGB"), dtype=np.uint8)
    except ValueError as exc:  # e.g. LAB without a colour-management transform
        raise UnsupportedImage(f"colour mode {mode} cannot be converted to RGB", None) from exc


def require_rgb(image: np.ndarray, name: str = "image", allow_empty: bool = True) -> np.ndarray:
    """The array as contiguous RGB uint8 (H, W, 3), what every model and codec here takes; refused up front
    with its dtype and shape otherwise (`allow_empty` False also refuses a zero-sized side)."""
    image = np.asarray(image)
    if (
        image.dtype != np.uint8
        or image.ndim != 3
        or image.shape[2] != 3
        or (not allow_empty and 0 in image.shape)
    ):
        raise ValueError(f"`{name}` has to be RGB uint8 (H, W, 3) but is {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 array (lossless; used for synthetic subjects and crops)."""
    image = require_rgb(image)
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an RGB uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), "RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
