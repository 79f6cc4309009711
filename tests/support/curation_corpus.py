"""A curation test corpus made here, of synthetic subjects only: clean kiss clips rendered by the
preview compositor, broken variants each of which must be rejected for exactly one reason, and
hostile files. Nobody real is ever rendered (kiss_core.faces.synthetic).

`build_corpus(root)` writes SOURCE-style files (clip + `<name>.json` sidecar) and returns the
expectations: name -> Expected(decision, reasons, contact time for kept clips).
"""

from __future__ import annotations

import functools
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from kiss_core.faces.analysis import DlibFaceAnalyzer
from kiss_core.faces.synthetic import synthetic_subject
from kiss_core.media.video import encode_jpeg, encode_mp4
from kiss_core.scene.choreography import KissPlan, plan_kiss
from kiss_core.scene.render import PreviewCompositor
from kiss_core.schemas import SubjectAnalysis, VideoParams

SIDECAR = {
    "licence": "kissgen-synthetic",
    "consent_refs": ["synthetic/a", "synthetic/b"],
    "origin": "synthetic",
}


@dataclass(frozen=True)
class Rendered:
    frames: list[np.ndarray]
    fps: int
    plan: KissPlan

    @property
    def contact_s(self) -> float:
        return self.plan.contact_frame / self.fps


@dataclass(frozen=True)
class Expected:
    decision: str  # kept | rejected | failed
    reasons: tuple[str, ...] = ()
    contact_s: float | None = None  # kept clips: the plan's contact time in the source clip
    style: str | None = None


@functools.cache
def _analyses(a: int, b: int) -> tuple[dict[str, np.ndarray], dict[str, SubjectAnalysis]]:
    analyzer = DlibFaceAnalyzer()
    photos = {"a": synthetic_subject(a), "b": synthetic_subject(b)}
    return photos, {s: analyzer.analyze(p, s) for s, p in photos.items()}


def render(
    pair: tuple[int, int], style: str, size: str, fps: int, seconds: float, photo_b: int | None = None
) -> Rendered:
    """A preview-compositor kiss of two synthetic subjects; `photo_b` renders another subject's photo on
    b's plan (a look-alike swap: same motion, other face)."""
    photos, analyses = _analyses(*pair)
    params = VideoParams(style=style, size=size, fps=fps, seconds=seconds)  # type: ignore[arg-type]
    plan = plan_kiss(analyses, params)
    if photo_b is not None:
        photos = {"a": photos["a"], "b": synthetic_subject(photo_b)}
    frames = list(PreviewCompositor().render(plan, photos, analyses))
    return Rendered(frames, fps, plan)


def write_clip(
    path: Path, frames: list[np.ndarray], fps: int, sidecar: dict | None = SIDECAR, crf: int = 18
) -> None:
    path.write_bytes(encode_mp4(frames, fps, crf=crf))
    if sidecar is not None:
        path.with_suffix(".json").write_text(json.dumps(sidecar))


# Broken variants: frame transforms of a clean clip.


def blurred(frames: list[np.ndarray]) -> list[np.ndarray]:
    return [cv2.GaussianBlur(f, (0, 0), 5.0) for f in frames]


def over_exposed(frames: list[np.ndarray]) -> list[np.ndarray]:
    return [cv2.convertScaleAbs(f, alpha=2.2, beta=40) for f in frames]


def blocky(frames: list[np.ndarray]) -> list[np.ndarray]:
    """Every frame through JPEG at quality 4: 8x8 blocks everywhere."""
    out = []
    for f in frames:
        bgr = cv2.imdecode(np.frombuffer(encode_jpeg(f, 4), np.uint8), cv2.IMREAD_COLOR)
        assert bgr is not None
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return out


def shaken(frames: list[np.ndarray], amplitude: float = 14.0, seed: int = 3) -> list[np.ndarray]:
    """A hand-held camera: every frame moved by a fresh random offset (a jittery, unsteady framing)."""
    rng = np.random.default_rng(seed)
    out = []
    for f in frames:
        dx, dy = rng.uniform(-amplitude, amplitude, 2)
        m = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
        out.append(cv2.warpAffine(f, m, (f.shape[1], f.shape[0]), borderMode=cv2.BORDER_REFLECT))
    return out


def spliced(base: Rendered, other: Rendered, seconds: float = 1.0) -> list[np.ndarray]:
    """A jump cut: `seconds` of another clip replace the frames around the contact."""
    n = round(seconds * base.fps)
    start = base.plan.contact_frame - n // 2
    return base.frames[:start] + other.frames[start : start + n] + base.frames[start + n :]


def _head_mask(plan: KissPlan, subject: str, t: int, grow: float = 1.5) -> np.ndarray:
    points = plan.tracks[subject].landmarks[t]
    centre = points.mean(axis=0)
    hull = cv2.convexHull(((points - centre) * grow + centre).astype(np.float32))[:, 0]
    mask = np.zeros((plan.height, plan.width), np.float32)
    cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 1.0)
    return cv2.GaussianBlur(mask, (0, 0), 4)[..., None]


def one_face(clean: Rendered) -> list[np.ndarray]:
    """b's head painted over with the flat backdrop colour: only a is left."""
    out = []
    for t, f in enumerate(clean.frames):
        mask = _head_mask(clean.plan, "b", t, 1.7)
        fill = np.median(clean.frames[0][:40].reshape(-1, 3), axis=0)
        out.append((f * (1 - mask) + fill * mask).astype(np.uint8))
    return out


def third_face(frames: list[np.ndarray], index: int = 2) -> list[np.ndarray]:
    """A third synthetic face pasted into the top-left corner of every frame."""
    portrait = synthetic_subject(index)  # 480x600
    h = frames[0].shape[0] * 2 // 3
    w = round(h * 480 / 600)
    patch = cv2.resize(portrait, (w, h), interpolation=cv2.INTER_AREA)
    out = []
    for f in frames:
        g = f.copy()
        g[:h, :w] = patch
        out.append(g)
    return out


def identity_swap(clean: Rendered, swapped: Rendered, at: float = 0.15) -> list[np.ndarray]:
    """From `at` of the clip on (during the approach), b's face is another subject's (same motion, same
    background): a swap, or a cut between look-alikes."""
    start = round(at * len(clean.frames))
    out = clean.frames[:start]
    for t in range(start, len(clean.frames)):
        mask = _head_mask(clean.plan, "b", t, 1.15)
        out.append((clean.frames[t] * (1 - mask) + swapped.frames[t] * mask).astype(np.uint8))
    return out


def small_faces(frames: list[np.ndarray], scale: float = 0.4) -> list[np.ndarray]:
    """A wide shot: the scene shrunk into the middle of a flat frame of its own backdrop colour."""
    h, w = frames[0].shape[:2]
    sw, sh = round(w * scale) // 2 * 2, round(h * scale) // 2 * 2
    fill = np.median(frames[0][:40].reshape(-1, 3), axis=0).astype(np.uint8)
    x0, y0 = (w - sw) // 2, (h - sh) // 2
    out = []
    for f in frames:
        canvas = np.empty_like(f)
        canvas[:] = fill
        canvas[y0 : y0 + sh, x0 : x0 + sw] = cv2.resize(f, (sw, sh), interpolation=cv2.INTER_AREA)
        out.append(canvas)
    return out


# Hostile files.


def huge_frame_mkv() -> bytes:
    """An MJPEG Matroska file whose every header (Matroska and JPEG) says 10000x10000."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"kissgen-huge-{os.getpid()}.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mjpeg", rate=16)
        s.width = s.height = 256
        s.pix_fmt = "yuvj420p"
        for i in range(2):
            frame = av.VideoFrame(256, 256, "yuvj420p")
            frame.pts = i
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    data = path.read_bytes()
    path.unlink()
    size = (10000).to_bytes(2, "big")
    for element in (b"\xb0\x82", b"\xba\x82"):  # Matroska PixelWidth / PixelHeight, 2-byte values
        data = data.replace(element + b"\x01\x00", element + size)
    return data.replace(b"\xff\xc0\x00\x11\x08\x01\x00\x01\x00", b"\xff\xc0\x00\x11\x08" + size + size)


def lying_mkv(mp4: bytes, factor: float = 6.0) -> bytes:
    """The clip remuxed into Matroska with its Segment Duration multiplied: it claims to be longer."""
    import struct

    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"kissgen-lying-{os.getpid()}.mkv"
    with av.open(io.BytesIO(mp4), "r") as source, av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = stream
            out.mux(packet)
    data = bytearray(path.read_bytes())
    path.unlink()
    # Segment Info's Duration (id 0x4489, a 4- or 8-byte float in timecode-scale units), looked for inside
    # Info (id 0x1549A966): the two bytes alone also turn up by chance earlier, e.g. in a seek entry.
    at = data.find(b"\x44\x89", data.find(b"\x15\x49\xa9\x66"))
    while data[at + 2] not in (0x84, 0x88):
        at = data.find(b"\x44\x89", at + 1)
    size = data[at + 2] & 0x7F
    fmt = ">d" if size == 8 else ">f"
    (value,) = struct.unpack(fmt, data[at + 3 : at + 3 + size])
    data[at + 3 : at + 3 + size] = struct.pack(fmt, value * factor)
    return bytes(data)


Builder = Callable[[Path], None]


def build_corpus(root: Path, hostile: bool = True) -> dict[str, Expected]:
    """Writes the corpus into `root` and returns the expected decision per file name."""
    root.mkdir(parents=True, exist_ok=True)
    expected: dict[str, Expected] = {}
    clean = render((0, 1), "romantic", "832x480", 16, 4.5)
    peck = render((2, 3), "peck", "640x368", 24, 3.0)
    cheek = render((1, 2), "cheek", "832x480", 20, 4.0)
    portrait = render((3, 0), "french", "480x832", 16, 4.5)
    for name, clip in (
        ("clean_romantic", clean),
        ("clean_peck", peck),
        ("clean_cheek", cheek),
        ("clean_portrait", portrait),
    ):
        write_clip(root / f"{name}.mp4", clip.frames, clip.fps)
        expected[f"{name}.mp4"] = Expected("kept", (), clip.contact_s)

    def broken(
        name: str, frames: list[np.ndarray], reason: str, sidecar: dict | None = SIDECAR, fps: int = 16
    ) -> None:
        write_clip(root / f"{name}.mp4", frames, 16, sidecar)
        expected[f"{name}.mp4"] = Expected("rejected", (reason,))

    broken("no_sidecar", clean.frames, "no_sidecar", sidecar=None)
    broken("bad_licence", clean.frames, "licence_not_allowed", {**SIDECAR, "licence": "All-Rights-Reserved"})
    broken("missing_consent", clean.frames, "consent_missing", {**SIDECAR, "consent_refs": ["synthetic/a"]})
    broken("blurred", blurred(clean.frames), "blurred")
    broken("over_exposed", over_exposed(clean.frames), "over_exposed")
    broken("blocky", blocky(clean.frames), "blocky")
    other = render((2, 3), "romantic", "832x480", 16, 4.5)
    broken("jump_cut", spliced(clean, other), "jump_cut")
    broken("shaken", shaken(clean.frames), "camera_motion")
    broken("one_face", one_face(clean), "one_face")
    broken("third_face", third_face(clean.frames), "third_face")
    swapped = render((0, 1), "romantic", "832x480", 16, 4.5, photo_b=3)
    broken("identity_swap", identity_swap(clean, swapped), "identity_inconsistent")
    broken("small_faces", small_faces(clean.frames), "faces_too_small")

    data = (root / "clean_romantic.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "truncated.json").write_text(json.dumps(SIDECAR))
    expected["truncated.mp4"] = Expected("rejected", ("truncated",))
    if hostile:
        add_hostile(root, data, expected)
    return expected


def add_hostile(root: Path, clean_mp4: bytes, expected: dict[str, Expected]) -> None:
    """Zero bytes, a lying container, 10000x10000 frames, symlinks (a loop, one leaving SOURCE), a name
    that is not UTF-8."""
    sidecar = json.dumps(SIDECAR)
    files = {
        "zero_bytes.mp4": (b"", "empty_file"),
        "lying_length.mkv": (lying_mkv(clean_mp4), "truncated"),
        "huge_frames.mkv": (huge_frame_mkv(), "frame_too_large"),
    }
    for name, (data, reason) in files.items():
        (root / name).write_bytes(data)
        (root / name).with_suffix(".json").write_text(sidecar)
        expected[name] = Expected("rejected", (reason,))
    os.symlink("loop.mp4", root / "loop.mp4")  # points at itself
    (root / "loop.json").write_text(sidecar)
    expected["loop.mp4"] = Expected("rejected", ("unsafe_path",))
    outside = root.parent / f"{root.name}-outside.mp4"
    outside.write_bytes(clean_mp4)
    os.symlink(os.path.relpath(outside, root), root / "escape.mp4")
    (root / "escape.json").write_text(sidecar)
    expected["escape.mp4"] = Expected("rejected", ("unsafe_path",))
    raw_name = os.fsencode(root) + b"/caf\xe9.mp4"  # Latin-1 bytes: not UTF-8
    with open(raw_name, "wb") as f:
        f.write(clean_mp4)
    expected["caf\\xe9.mp4"] = Expected("rejected", ("bad_filename",))
