"""Encoding: H.264 yuv420p MP4 with the index first, faithful round trip; JPEG stills and thumbnails."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from kiss_core.media.video import (
    decode_mp4,
    encode_jpeg,
    encode_mp4,
    make_thumbnail,
    mp4_atoms,
    probe_mp4,
    rgb_to_yuv420p,
)
from tests.support.photos import astronaut_rgb


def moving_scene(count: int, width: int = 320, height: int = 240) -> list[np.ndarray]:
    """Smooth gradients and a moving disc: video-like content x264 can code well at crf 20."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for t in range(count):
        frame = np.dstack(
            [
                128 + 90 * np.sin((xx + 4 * t) / 40),
                128 + 90 * np.cos((yy - 3 * t) / 35),
                np.full_like(xx, 60 + 5 * t),
            ]
        )
        cv2.circle(frame, (40 + 8 * t, height // 2), 30, (240, 220, 40), -1, cv2.LINE_AA)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def test_our_yuv_conversion_matches_libswscale_and_keeps_edges() -> None:
    """The encoder's own RGB -> YUV 4:2:0 (a real photo at 832x480): luma as libswscale makes it, chroma
    within a few levels, and a round trip at least as close to the photo; OpenCV's plain I420, which
    samples each block's chroma from one pixel, is not."""
    photo = cv2.resize(astronaut_rgb(), (832, 480), interpolation=cv2.INTER_AREA)
    ours = rgb_to_yuv420p(photo).astype(int)
    theirs = av.VideoFrame.from_ndarray(photo, format="rgb24").reformat(format="yuv420p").to_ndarray()
    theirs = theirs.astype(int)
    assert ours.shape == theirs.shape == (720, 832)
    assert np.abs(ours[:480] - theirs[:480]).max() <= 1
    assert np.abs(ours[480:] - theirs[480:]).max() <= 8 and np.abs(ours[480:] - theirs[480:]).mean() < 0.5

    def back(planes: np.ndarray) -> np.ndarray:
        frame = av.VideoFrame.from_ndarray(planes.astype(np.uint8), format="yuv420p")
        return frame.to_ndarray(format="rgb24")

    plain = cv2.cvtColor(photo, cv2.COLOR_RGB2YUV_I420)
    assert psnr(back(ours), photo) >= psnr(back(theirs), photo) > psnr(back(plain), photo) + 1


@pytest.mark.parametrize("fps", [24, 30])
def test_round_trip(fps: int) -> None:
    source = moving_scene(24)
    data = encode_mp4(iter(source), fps)  # any iterable, consumed lazily
    frames, decoded_fps = decode_mp4(data)
    assert frames.shape == (24, 240, 320, 3) and frames.dtype == np.uint8
    assert decoded_fps == pytest.approx(fps)
    assert psnr(frames, np.stack(source)) > 30
    info = probe_mp4(data)
    assert info == {
        "width": 320,
        "height": 240,
        "frames": 24,
        "fps": pytest.approx(fps),
        "codec": "h264",
        "pix_fmt": "yuv420p",
    }


def test_index_before_media_data() -> None:
    atoms = mp4_atoms(encode_mp4(moving_scene(8), 24))
    assert atoms[0] == "ftyp"
    assert "moov" in atoms and "mdat" in atoms
    assert atoms.index("moov") < atoms.index("mdat")


def test_odd_size_is_cropped_even() -> None:
    frames = [f[:121, :201] for f in moving_scene(4)]
    info = probe_mp4(encode_mp4(frames, 12))
    assert (info["width"], info["height"], info["frames"]) == (200, 120, 4)


def test_crf_trades_size_for_fidelity() -> None:
    source = moving_scene(12)
    small, large = encode_mp4(source, 24, crf=35), encode_mp4(source, 24, crf=15)
    assert len(small) < len(large)
    assert psnr(decode_mp4(small)[0], np.stack(source)) < psnr(decode_mp4(large)[0], np.stack(source))


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="no frames"):
        encode_mp4([], 24)
    with pytest.raises(ValueError, match="one size"):
        encode_mp4([np.zeros((64, 64, 3), np.uint8), np.zeros((32, 64, 3), np.uint8)], 24)
    with pytest.raises(ValueError, match="RGB uint8"):
        encode_mp4([np.zeros((64, 64), np.uint8)], 24)
    with pytest.raises(ValueError, match="fps"):
        encode_mp4(moving_scene(1), 0)


def test_jpeg_and_thumbnail() -> None:
    frame = moving_scene(1, 832, 480)[0]
    data = encode_jpeg(frame)
    assert data[:2] == b"\xff\xd8"
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert decoded.shape == frame.shape and psnr(decoded, frame) > 30  # RGB order kept
    thumb = cv2.imdecode(np.frombuffer(make_thumbnail(frame), np.uint8), cv2.IMREAD_COLOR)
    assert thumb.shape == (185, 320, 3)
    small = moving_scene(1, 160, 120)[0]
    assert cv2.imdecode(np.frombuffer(make_thumbnail(small), np.uint8), cv2.IMREAD_COLOR).shape == (
        120,
        160,
        3,
    )
