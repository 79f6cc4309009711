"""A generated corpus of hostile and unusual requests for POST /v1/videos.

Each case is (name, form fields, files, expectation): `expect` is either an HTTP status with a
problem `code` (refused) or "accepted" (valid but unusual, must be handled). Images are built here
with Pillow from the synthetic subjects; nothing is downloaded.
"""

from __future__ import annotations

import io
import random
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from kiss_core.faces.synthetic import synthetic_subject

CONSENT = {"consent_a": "true", "consent_b": "true"}
SMALL = {"style": "peck", "seconds": "1", "fps": "8", "size": "128x128"}


@dataclass
class Case:
    name: str
    expect: int | str  # an HTTP status, or "accepted"
    code: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    files: list[tuple[str, tuple[str, bytes, str]]] = field(default_factory=list)
    subject: str | None = None
    body: tuple[str, bytes] | None = None  # (content type, raw bytes) sent instead of data/files


Files = list[tuple[str, tuple[str, bytes, str]]]


def multipart(fields: dict[str, bytes], files: Files) -> tuple[str, bytes]:
    """A multipart/form-data body built by hand, so field values can be arbitrary bytes."""
    boundary = b"kissgen-hostile-boundary"
    parts = []
    for name, value in fields.items():
        disposition = b'Content-Disposition: form-data; name="%s"' % name.encode()
        parts.append(b"--%s\r\n%s\r\n\r\n%s\r\n" % (boundary, disposition, value))
    for name, (filename, content, ctype) in files:
        disposition = b'Content-Disposition: form-data; name="%s"; filename="%s"' % (
            name.encode(),
            filename.encode(),
        )
        parts.append(
            b"--%s\r\n%s\r\nContent-Type: %s\r\n\r\n%s\r\n" % (boundary, disposition, ctype.encode(), content)
        )
    body = b"".join(parts) + b"--%s--\r\n" % boundary
    return f"multipart/form-data; boundary={boundary.decode()}", body


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def face(index: int = 0) -> Image.Image:
    return Image.fromarray(synthetic_subject(index))


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG header claiming width x height pixels, with a tiny compressed body."""
    raw = zlib.compress(b"\x00" * (1 + (width + 7) // 8) * min(height, 64), 9)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def animated(fmt: str) -> bytes:
    frames = [face(0).resize((160, 200)), face(1).resize((160, 200))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def oriented(orientation: int) -> bytes:
    """The face stored rotated/flipped so that EXIF `orientation` makes it upright again."""
    upright = face(0)
    # Inverse of what a viewer applies for each EXIF orientation.
    undo = {
        1: [],
        2: [Image.Transpose.FLIP_LEFT_RIGHT],
        3: [Image.Transpose.ROTATE_180],
        4: [Image.Transpose.FLIP_TOP_BOTTOM],
        5: [Image.Transpose.TRANSPOSE],
        6: [Image.Transpose.ROTATE_90],
        7: [Image.Transpose.TRANSVERSE],
        8: [Image.Transpose.ROTATE_270],
    }[orientation]
    stored = upright
    for op in undo:
        stored = stored.transpose(op)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", exif=exif.tobytes(), quality=92)


def two_faces() -> bytes:
    """Two synthetic people side by side, the right one larger: the larger must be chosen."""
    canvas = Image.new("RGB", (960, 600), (90, 90, 90))
    canvas.paste(face(1).resize((320, 400)), (40, 150))
    canvas.paste(face(0), (460, 0))
    return encode(canvas, "PNG")


def tiny_face() -> bytes:
    canvas = Image.new("RGB", (800, 800), (120, 120, 120))
    canvas.paste(face(0).resize((48, 60)), (380, 370))
    return encode(canvas, "PNG")


def gradient() -> bytes:
    return encode(Image.fromarray(np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (200, 1, 3))), "PNG")


def corpus(seed: int = 7) -> list[Case]:
    rng = random.Random(seed)
    good = encode(face(0), "JPEG", quality=90)
    other = encode(face(1), "JPEG", quality=90)

    def pair(a: bytes, b: bytes = other, ctype: str = "image/jpeg") -> Files:
        return [("subject_a", ("a.jpg", a, ctype)), ("subject_b", ("b.jpg", b, "image/jpeg"))]

    def fields(**extra: str) -> dict[str, str]:
        return {**CONSENT, **SMALL, **extra}

    def refused(name: str, status: int, code: str, photo: bytes, subject: str | None = "a") -> Case:
        return Case(name, status, code, fields(), pair(photo), subject)

    def invalid(name: str, extra: dict[str, str]) -> Case:
        return Case(name, 422, "invalid_request", fields(**extra), pair(good))

    cases: list[Case] = []
    # Random and truncated bytes, under image and other content types.
    for i in range(60):
        blob = rng.randbytes(rng.choice([0, 1, 7, 100, 5000, 60000]))
        ctype = rng.choice(["image/jpeg", "image/png", "image/webp", "application/octet-stream"])
        cases.append(Case(f"random-{i}", 422, "image_unreadable", fields(), pair(blob, other, ctype), "a"))
    for i, cut in enumerate((10, 100, 1000, len(good) // 2, len(good) - 50)):
        cases.append(refused(f"truncated-jpeg-{i}", 422, "image_unreadable", good[:cut]))
    png = encode(face(0), "PNG")
    cases.append(refused("truncated-png", 422, "image_unreadable", png[: len(png) // 3]))
    # Decompression bombs, absurd and tiny sizes.
    for w, h in ((30000, 30000), (20000, 20000), (100000, 500), (7000, 7000)):
        cases.append(refused(f"bomb-{w}x{h}", 413, "image_too_large", png_bomb(w, h)))
    one = encode(Image.new("RGB", (1, 1), (200, 100, 50)), "PNG")
    cases.append(refused("one-pixel", 422, "image_too_small", one))
    # Animated images.
    for fmt in ("GIF", "WEBP", "PNG"):
        cases.append(refused(f"animated-{fmt}", 415, "unsupported_image", animated(fmt)))
    # No face, tiny face.
    cases.append(Case("no-face", 422, "face_not_found", fields(), pair(good, gradient()), "b"))
    cases.append(refused("tiny-face", 422, "face_not_found", tiny_face()))
    # Missing, duplicated, unknown and misplaced fields.
    for missing in ("subject_a", "subject_b"):
        files = [f for f in pair(good) if f[0] != missing]
        cases.append(Case(f"missing-{missing}", 422, "invalid_request", fields(), files))
    dup = [*pair(good), ("subject_a", ("c.jpg", good, "image/jpeg"))]
    cases.append(Case("duplicated-photo", 422, "invalid_request", fields(), dup))
    cases.append(invalid("unknown-field", {"colour": "red"}))
    text_photo = [("subject_b", ("b.jpg", other, "image/jpeg"))]
    cases.append(
        Case("photo-as-text", 422, "invalid_request", {**fields(), "subject_a": "hello"}, text_photo)
    )
    file_param = [*pair(good), ("style", ("s.txt", b"peck", "text/plain"))]
    cases.append(Case("param-as-file", 422, "invalid_request", fields(), file_param))
    # Invalid enums and numbers.
    values = {
        "style": ["wild", "", "PECK", "peck ", "0", "romantic;drop"],
        "intensity": ["-0.1", "1.01", "nan", "inf", "abc", "1e309", ""],
        "seconds": ["0", "0.5", "11", "-5", "1e9", "five"],
        "size": ["832x481", "0x0", "10000x10000", "832", "x", "832x480x3", "-832x480", "1296x720"],
        "fps": ["0", "7", "31", "24.5", "1e3", "-24"],
        "seed": ["-1", "2147483648", "1.5", "seed"],
        "output": ["gif", "", "VIDEO"],
        "consent_a": ["maybe", "2", ""],
    }
    for name, options in values.items():
        cases.extend(invalid(f"{name}={value!r}", {name: value}) for value in options)
    # Consent missing or refused.
    cases.append(Case("no-consent", 422, "consent_required", SMALL, pair(good), "a"))
    cases.append(Case("consent-b-false", 422, "consent_required", fields(consent_b="false"), pair(good), "b"))
    # Very long strings, and bytes that are not UTF-8.
    cases.append(invalid("long-style", {"style": "x" * 100_000}))
    cases.append(invalid("long-consent-ref", {"consent_ref_a": "r" * 1000}))
    for i, raw in enumerate((b"\xff\xfe\xfa", b"caf\xe9", b"\xc3\x28", b"peck\x80")):
        body = multipart({**{k: v.encode() for k, v in fields().items()}, "style": raw}, pair(good))
        cases.append(Case(f"non-utf8-{i}", 422, "invalid_request", body=body))
    # Malformed bodies and wrong content types.
    cases.append(Case("json-body", 422, "invalid_request", body=("application/json", b'{"style": "peck"}')))
    cases.append(Case("no-boundary", 422, "invalid_request", body=("multipart/form-data", b"--x\r\n\r\n")))
    garbage = b"--zz\r\nContent-Disposition: nonsense\r\n\r\n\x00\xff"
    cases.append(
        Case("garbage-multipart", 422, "invalid_request", body=("multipart/form-data; boundary=zz", garbage))
    )
    cases.append(Case("empty-body", 422, "invalid_request", body=("multipart/form-data; boundary=q", b"")))
    # Oversized: a photo over the upload limit, a body over the request limit.
    huge = good + b"\x00" * (15 * 2**20)
    cases.append(refused("oversized-photo", 413, "image_too_large", huge))
    cases.append(
        Case("oversized-body", 413, "payload_too_large", fields(), pair(huge, huge + b"\x00" * 2**20 * 10))
    )
    # Valid but unusual: must be accepted and handled (the test checks the analysis, then deletes).
    for orientation in range(1, 9):
        photo = oriented(orientation)
        cases.append(Case(f"exif-orientation-{orientation}", "accepted", None, fields(), pair(photo)))
    for mode in ("CMYK", "L", "LA", "RGBA", "P", "I;16"):
        image = face(0).convert("L" if mode == "I;16" else mode)
        if mode == "I;16":
            image = Image.fromarray(np.asarray(image, dtype=np.uint16) * 257)
        photo = encode(image, "TIFF" if mode in ("CMYK", "I;16") else "PNG")
        cases.append(Case(f"mode-{mode}", "accepted", None, fields(), pair(photo)))
    cases.append(Case("webp", "accepted", None, fields(), pair(encode(face(0), "WEBP", quality=90))))
    cases.append(Case("several-faces", "accepted", None, fields(), pair(two_faces())))
    return cases
