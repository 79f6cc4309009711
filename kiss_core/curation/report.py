"""The run's report: counts per decision and reason (report.json), score histograms and a contact sheet
of kept and rejected examples (PNG). Built from manifest rows, so a report can be redrawn from any
manifest; thumbnails are the JPEGs the workers left under report/thumbs/.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from kiss_core.curation import manifest
from kiss_core.curation.sources import Store
from kiss_core.storage import ObjectNotFound

THUMBS_DIR = f"{manifest.REPORT_DIR}/thumbs"
SHEET_TILE = (240, 150)  # each example, with its label under it


def thumb_key(source_id: str) -> str:
    return f"{THUMBS_DIR}/{source_id}.jpg"


def summarise(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts per decision, per reason and per style, and total worker seconds per stage."""
    decisions: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    styles: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    segments = 0
    for row in rows:
        if row["kind"] == manifest.KIND_SEGMENT:
            segments += 1
            styles[str(row.get("style"))] += 1
            continue
        decisions[str(row["decision"])] += 1
        reasons.update(row.get("reasons") or [])
        if row.get("stage_seconds"):
            stages.update(json.loads(row["stage_seconds"]))
    return {
        "clips": sum(decisions.values()),
        "decisions": dict(sorted(decisions.items())),
        "reasons": dict(reasons.most_common()),
        "segments": segments,
        "styles": dict(sorted(styles.items())),
        "stage_seconds": {k: round(v, 3) for k, v in sorted(stages.items())},
    }


def histograms_png(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """One histogram per score column, kept and rejected source clips overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = [r for r in rows if r["kind"] == manifest.KIND_SOURCE]
    columns = manifest.SCORE_COLUMNS
    cols = 4
    lines = (len(columns) + cols - 1) // cols
    fig, axes = plt.subplots(lines, cols, figsize=(4 * cols, 2.6 * lines))
    for ax, column in zip(np.ravel(axes), columns, strict=False):
        for decision, colour in ((manifest.KEPT, "tab:green"), (manifest.REJECTED, "tab:red")):
            values = [r[column] for r in sources if r["decision"] == decision and r.get(column) is not None]
            if values:
                ax.hist(values, bins=20, alpha=0.6, color=colour, label=f"{decision} ({len(values)})")
        ax.set_title(column.removeprefix("score_"), fontsize=9)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in np.ravel(axes)[len(columns) :]:
        ax.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def contact_sheet_png(rows: Sequence[Mapping[str, Any]], store: Store, per_kind: int = 8) -> bytes | None:
    """Up to `per_kind` kept and `per_kind` rejected clips, each labelled with its name and decision."""
    picks: list[tuple[Mapping[str, Any], Image.Image]] = []
    for decision in (manifest.KEPT, manifest.REJECTED):
        count = 0
        for row in rows:
            if row["kind"] != manifest.KIND_SOURCE or row["decision"] != decision or count >= per_kind:
                continue
            if row.get("num_frames") is None:  # never decoded: no picture of its own
                continue
            try:
                image = Image.open(io.BytesIO(store.get(thumb_key(row["source_id"])))).convert("RGB")
            except (ObjectNotFound, OSError):
                continue
            picks.append((row, image))
            count += 1
    if not picks:
        return None
    tile_w, tile_h = SHEET_TILE
    label_h = 30
    cols = min(4, len(picks))
    lines = (len(picks) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * tile_w, lines * (tile_h + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (row, image) in enumerate(picks):
        x, y = (k % cols) * tile_w, (k // cols) * (tile_h + label_h)
        image.thumbnail((tile_w - 4, tile_h - 4))
        sheet.paste(image, (x + (tile_w - image.width) // 2, y + (tile_h - image.height) // 2))
        kept = row["decision"] == manifest.KEPT
        what = "kept" if kept else ", ".join(row.get("reasons") or [row["decision"]])
        draw.text((x + 4, y + tile_h), str(row["source_path"])[:38], fill="black")
        draw.text((x + 4, y + tile_h + 13), what[:38], fill="darkgreen" if kept else "darkred")
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def write_report(rows: Sequence[Mapping[str, Any]], store: Store, extra: Mapping[str, Any]) -> dict[str, Any]:
    """report/report.json, report/scores.png and report/contact_sheet.png; returns the JSON."""
    summary = {**summarise(rows), **extra}
    store.put(
        f"{manifest.REPORT_DIR}/report.json", json.dumps(summary, indent=2).encode(), "application/json"
    )
    store.put(f"{manifest.REPORT_DIR}/scores.png", histograms_png(rows), "image/png")
    sheet = contact_sheet_png(rows, store)
    if sheet is not None:
        store.put(f"{manifest.REPORT_DIR}/contact_sheet.png", sheet, "image/png")
    return summary
