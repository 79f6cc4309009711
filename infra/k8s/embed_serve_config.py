"""Copies serve_config.yaml into rayservice.yaml's `serveConfigV2` block, verbatim (comments too).

    python infra/k8s/embed_serve_config.py

The RayService must deploy exactly what `serve deploy serve_config.yaml` deploys;
tests/unit/test_infra.py fails when the two differ and names this script.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVE_CONFIG = ROOT / "serve_config.yaml"
RAYSERVICE = Path(__file__).resolve().parent / "rayservice.yaml"
START = "  serveConfigV2: |\n"
END = "  rayClusterConfig:\n"
INDENT = "    "


def embedded(manifest: str, serve_config: str) -> str:
    """`manifest` with the block between START and END replaced by `serve_config`, indented."""
    head, rest = manifest.split(START, 1)
    _, tail = rest.split(END, 1)
    body = "".join(INDENT + line if line.strip() else "\n" for line in serve_config.splitlines(True))
    return head + START + body + END + tail


def main() -> None:
    RAYSERVICE.write_text(embedded(RAYSERVICE.read_text(), SERVE_CONFIG.read_text()))
    print(f"embedded {SERVE_CONFIG.name} into {RAYSERVICE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
