"""The studio's style previews: one short looping clip per style, made by the preview compositor from
two synthetic subjects (composites of nobody), never from photos of real people.

    python -m deployments.http.style_previews [--out deployments/http/static/styles]

Each clip is the producer's own output for the style (lighting, plan, render, the visible AI label),
re-encoded small for the page (a few tens of KB). They are committed with the page; the browser-test
module tests/browser/test_page_files.py checks that each one decodes and still has the shape of a
fresh render, so a change to the compositor's output format cannot leave them silently stale.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path
from typing import get_args

from kiss_core.faces.analysis import DlibFaceAnalyzer
from kiss_core.faces.synthetic import synthetic_subject_png
from kiss_core.generation.conditioning import IdentityEncoder
from kiss_core.generation.producer import VideoProducer
from kiss_core.media.images import decode_image
from kiss_core.media.video import decode_mp4, encode_mp4
from kiss_core.schemas import StageRequest, Style, VideoParams
from kiss_core.settings import Settings
from kiss_core.storage import LocalDirStore

STYLES: tuple[str, ...] = get_args(Style)
OUT_DIR = Path(__file__).with_name("static") / "styles"
SUBJECTS = (0, 1)  # synthetic subject indices of the pair shown
SIZE = "192x192"
SECONDS = 2.0
FPS = 12
CRF = 26  # small files (a few KB): the page shows them at about 200 px


def preview_params(style: str) -> VideoParams:
    return VideoParams.model_validate({"style": style, "size": SIZE, "seconds": SECONDS, "fps": FPS})


def preview_job_id(style: str) -> str:
    """A fixed job id per style (the watermark carries it), so a re-run makes the same frames."""
    return "video_" + hashlib.sha256(f"style-preview-{style}".encode()).hexdigest()[:24]


def render_style(style: str, settings: Settings | None = None) -> bytes:
    """The MP4 of `style` as the preview producer makes it for the synthetic pair, re-encoded small."""
    settings = settings or Settings()
    with tempfile.TemporaryDirectory() as root:
        store = LocalDirStore(root)
        analyzer = DlibFaceAnalyzer(settings.faces)
        pngs = {"a": synthetic_subject_png(SUBJECTS[0]), "b": synthetic_subject_png(SUBJECTS[1])}
        photos = {s: decode_image(data, settings.limits, s) for s, data in pngs.items()}
        analyses = {s: analyzer.analyze(photos[s], s) for s in photos}
        conditioning = IdentityEncoder(settings.faces).encode(photos, analyses)
        keys = {s: f"inputs/preview-{style}/{s}.png" for s in pngs}
        for subject, key in keys.items():
            store.put(key, pngs[subject], "image/png")
        request = StageRequest(
            job_id=preview_job_id(style),
            params=preview_params(style),
            input_keys=keys,
            analyses=[analyses["a"], analyses["b"]],
        )
        result = VideoProducer(settings, store, analyzer).produce(request, conditioning)
        frames, _ = decode_mp4(store.get(result.keys["video"]))
    return encode_mp4(list(frames), FPS, crf=CRF, preset="slow")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="where STYLE.mp4 go (default: %(default)s)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for style in STYLES:
        data = render_style(style)
        (args.out / f"{style}.mp4").write_bytes(data)
        print(f"{args.out / f'{style}.mp4'}: {len(data)} bytes")


if __name__ == "__main__":
    main()
