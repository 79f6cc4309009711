"""decode_image on real and hostile inputs: every refusal is a typed ClientError naming the subject."""

from __future__ import annotations

import io
import os
import zlib

import numpy as np
import pytest
from PIL import Image

from kiss_core.errors import ImageTooLarge, ImageTooSmall, ImageUnreadable, UnsupportedImage
from kiss_core.media.images import decode_image, encode_png
from kiss_core.settings import LimitSettings
from tests.support.photos import astronaut_rgb, t1_bytes

LIMITS = LimitSettings()


def _save(image: Image.Image, fmt: str, **args: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **args)
    return buffer.getvalue()


def _gradient(width: int = 120, height: int = 80) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None, None]
    return np.concatenate(
        [
            np.broadcast_to(x, (height, width, 1)),
            np.broadcast_to(y, (height, width, 1)),
            np.full((height, width, 1), 128.0),
        ],
        axis=2,
    ).astype(np.uint8)


def test_real_jpeg_decodes_to_rgb_uint8() -> None:
    image = decode_image(t1_bytes(), LIMITS, "a")
    assert image.shape == (886, 1280, 3)
    assert image.dtype == np.uint8


def test_png_roundtrip_is_lossless() -> None:
    image = astronaut_rgb()
    assert np.array_equal(decode_image(encode_png(image), LIMITS, "b"), image)


def test_random_bytes_are_unreadable() -> None:
    with pytest.raises(ImageUnreadable) as info:
        decode_image(os.urandom(4096), LIMITS, "a")
    assert info.value.subject == "a"
    assert "'a'" in info.value.detail


def test_empty_upload_is_unreadable() -> None:
    with pytest.raises(ImageUnreadable):
        decode_image(b"", LIMITS, "a")


def test_truncated_jpeg_is_unreadable() -> None:
    data = t1_bytes()
    with pytest.raises(ImageUnreadable) as info:
        decode_image(data[: len(data) // 2], LIMITS, "b")
    assert info.value.subject == "b"


def _png_bomb(width: int, height: int) -> bytes:
    """A real 1-bit PNG of width x height zero pixels, compressed to a few hundred kB."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = _png_bomb(30000, 30000)
    assert len(bomb) < 2_000_000  # small in bytes, 900 megapixels in the header
    with pytest.raises(ImageTooLarge) as info:
        decode_image(bomb, LIMITS, "a")
    assert info.value.subject == "a"


def test_pixel_limit_below_pillows_own_is_enforced() -> None:
    image = _png_bomb(3000, 2000)  # 6 MP: fine for Pillow, too many for this limit
    with pytest.raises(ImageTooLarge) as info:
        decode_image(image, LimitSettings(max_image_pixels=5_000_000), "b")
    assert "3000x2000" in info.value.detail


def test_upload_over_byte_limit_is_too_large() -> None:
    with pytest.raises(ImageTooLarge):
        decode_image(t1_bytes(), LimitSettings(max_upload_bytes=1000), "a")


def test_too_small_image() -> None:
    data = _save(Image.fromarray(_gradient(40, 30)), "PNG")
    with pytest.raises(ImageTooSmall) as info:
        decode_image(data, LIMITS, "a")
    assert "40x30" in info.value.detail


def test_animated_gif_is_unsupported() -> None:
    frames = [Image.fromarray(_gradient()), Image.fromarray(255 - _gradient())]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.raises(UnsupportedImage) as info:
        decode_image(data, LIMITS, "b")
    assert info.value.subject == "b"
    assert "2 frames" in info.value.detail


def test_single_frame_gif_is_accepted() -> None:
    data = _save(Image.fromarray(_gradient()), "GIF")
    assert decode_image(data, LIMITS, "a").shape == (80, 120, 3)


def test_other_formats_are_unsupported() -> None:
    data = _save(Image.fromarray(_gradient()), "PPM")
    with pytest.raises(UnsupportedImage) as info:
        decode_image(data, LIMITS, "a")
    assert "PPM" in info.value.detail


def test_exif_orientation_is_applied() -> None:
    image = Image.fromarray(_gradient(120, 80))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = _save(image, "JPEG", exif=exif.tobytes(), quality=95)
    decoded = decode_image(data, LIMITS, "a")
    assert decoded.shape == (120, 80, 3)
    # The image's left column (x gradient = 0, dark red) ends up on top after a clockwise turn.
    assert decoded[0, :, 0].mean() < 40 and decoded[-1, :, 0].mean() > 200


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "TIFF"])
def test_supported_formats(fmt: str) -> None:
    decoded = decode_image(
        _save(Image.fromarray(_gradient()), fmt, **({"lossless": True} if fmt == "WEBP" else {})), LIMITS, "a"
    )
    assert decoded.shape == (80, 120, 3) and decoded.dtype == np.uint8


def test_cmyk_jpeg_decodes_to_rgb() -> None:
    data = _save(Image.fromarray(_gradient()).convert("CMYK"), "JPEG", quality=95)
    decoded = decode_image(data, LIMITS, "a")
    assert decoded.shape == (80, 120, 3) and decoded.dtype == np.uint8
    assert abs(int(decoded[40, 119, 0]) - 255) < 30  # red ramps up to the right


def test_16_bit_png_is_scaled_not_clipped() -> None:
    values = np.tile(np.linspace(0, 65535, 120).astype(np.uint16), (80, 1))
    data = _save(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    decoded = decode_image(data, LIMITS, "a")
    assert decoded.shape == (80, 120, 3) and decoded.dtype == np.uint8
    assert decoded[0, 0, 0] == 0 and decoded[0, -1, 0] == 255 and 100 < decoded[0, 60, 0] < 156


def test_rgba_is_composited_on_white() -> None:
    rgba = np.zeros((80, 120, 4), dtype=np.uint8)
    rgba[:, :60] = (255, 0, 0, 255)  # opaque red on the left, fully transparent on the right
    decoded = decode_image(_save(Image.fromarray(rgba, "RGBA"), "PNG"), LIMITS, "a")
    assert tuple(decoded[10, 10]) == (255, 0, 0)
    assert tuple(decoded[10, 100]) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["P", "L", "LA", "1"])
def test_other_modes_decode_to_rgb(mode: str) -> None:
    decoded = decode_image(_save(Image.fromarray(_gradient()).convert(mode), "PNG"), LIMITS, "a")
    assert decoded.shape == (80, 120, 3) and decoded.dtype == np.uint8


def test_encode_png_refuses_non_rgb() -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        encode_png(np.zeros((4, 4), dtype=np.uint8))
