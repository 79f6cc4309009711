"""Contact sheet: start, approach, contact and separation frames of a few synthetic pairs, one PNG.

    .venv/bin/python bench/contact_sheet.py [--out docs/contact_sheet.png] [--cell-width 416]

One row per (pair, style), so every style shows once; a last column is the pose control frame at
the contact (what a diffusion backend is guided by). Each row is rendered as a job would be, with the
scene chosen automatically (`background=auto`: one photo's own background with its person
inpainted away, or the blur); the first cell's label names the scene. Synthetic subjects only — composites of
several faces, never a real person. Each row's caption carries the row's quality numbers, so what a
person sees and what the report says sit side by side. Writes the PNG and
bench/results/contact_sheet.json (the reports).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kiss_core.scene.camera import apply_camera  # noqa: E402
from kiss_core.scene.choreography import plan_kiss  # noqa: E402
from kiss_core.scene.lighting import harmonize_photos  # noqa: E402
from kiss_core.scene.pose_video import render_pose_frames  # noqa: E402
from kiss_core.scene.render import PreviewCompositor  # noqa: E402
from kiss_core.schemas import QualityReport, VideoParams  # noqa: E402
from kiss_core.settings import Settings  # noqa: E402
from tests.support.studio import PAIRS, SyntheticStudio  # noqa: E402

ROWS = tuple(zip(PAIRS, ("peck", "romantic", "french", "cheek"), strict=True))
COLUMNS = ("start", "approach", "contact", "separation", "pose at contact")


def moments(phases: dict[str, tuple[int, int]], contact: int) -> list[int]:
    """Frame indices of the four moments: first frame, middle of the approach, contact, mid-separation."""
    approach = phases["approach"]
    separation = phases["separation"]
    return [0, (approach[0] + approach[1]) // 2, contact, (separation[0] + separation[1]) // 2]


def caption(report: QualityReport) -> str:
    similarity = " ".join(
        f"{s.subject} {s.similarity_mean:.3f}" for s in report.subjects if s.similarity_mean
    )
    contact = report.contact.mouth_distance if report.contact else None
    lighting = report.lighting
    return (
        f"identity {similarity} | contact {contact:.2f} | flicker {report.flicker.mean:.3f} | "
        f"dE {lighting.delta_e_input:.1f}->{lighting.delta_e_output:.1f}"
    )


def label(image: np.ndarray, text: str, scale: float) -> None:
    """White text on a dark band at the top of `image`, in place."""
    height = int(22 * scale)
    image[:height] = (image[:height] * 0.35).astype(np.uint8)
    cv2.putText(
        image,
        text,
        (6, int(16 * scale)),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.45 * scale,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "contact_sheet.png")
    parser.add_argument("--cell-width", type=int, default=416)
    args = parser.parse_args()

    settings = Settings()
    studio = SyntheticStudio(settings, tempfile.mkdtemp(prefix="kiss-sheet-"))
    compositor = PreviewCompositor()
    rows, reports = [], {}
    for (a, b), style in ROWS:
        pair = studio.pair(a, b)
        params = VideoParams(style=style)
        plan = plan_kiss(pair.analyses, params)
        photos = harmonize_photos(
            pair.photos, {s: pair.analyses[s].landmarks for s in "ab"}, settings.generator.lighting_strength
        )
        wanted = moments(plan.phases, plan.contact_frame)
        # As the preview backend does: draw the scene, then the camera's crop of it.
        drawn = plan.scene()
        scene = compositor.scene(drawn, photos, pair.analyses, params.background)
        frames = {
            i: f if plan.camera is None else apply_camera(f, plan.camera[i])
            for i, f in enumerate(compositor.frames(drawn, scene))
            if i in wanted
        }
        pose = next(f for i, f in enumerate(render_pose_frames(plan)) if i == plan.contact_frame)
        report = studio.produce(pair, params).quality
        reports[f"{pair.name} {style}"] = report.model_dump(mode="json")

        scale = args.cell_width / plan.width
        size = (args.cell_width, round(plan.height * scale))
        cells = [cv2.resize(frames[i], size, interpolation=cv2.INTER_AREA) for i in wanted]
        cells.append(cv2.resize(pose, size, interpolation=cv2.INTER_AREA))
        for cell, name, index in zip(cells, COLUMNS, [*wanted, plan.contact_frame], strict=True):
            where = f", scene {scene.choice}" if name == "start" else ""
            label(cell, f"{pair.name} {style}: {name} (frame {index}){where}", 1.0)
        row = np.hstack(cells)
        band = np.full((24, row.shape[1], 3), 24, np.uint8)
        cv2.putText(
            band, caption(report), (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (230, 230, 230), 1, cv2.LINE_AA
        )
        rows.append(np.vstack([row, band]))
        print(f"{pair.name:<5} {style:<9} {caption(report)}")

    sheet = np.vstack(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    results = ROOT / "bench" / "results" / "contact_sheet.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(reports, indent=2))
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]}) and {results.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
