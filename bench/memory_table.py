"""Weights per replica of the Wan checkpoints, from their configs on the meta device (no GPU, no weights).

    .venv/bin/python bench/memory_table.py                    # the real checkpoints' configs (tests/support)
    .venv/bin/python bench/memory_table.py /models/wan-i2v ... # the configs of mounted model directories

Prints the Markdown table the GPU docs show and writes bench/results/memory_table.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kiss_core.generation.memory import format_table, memory_table, read_configs  # noqa: E402
from tests.support.wan_configs import CHECKPOINTS  # noqa: E402


def main() -> None:
    directories = [Path(a) for a in sys.argv[1:]]
    configs = {d.name: read_configs(d) for d in directories} if directories else CHECKPOINTS
    rows = memory_table(configs)
    print(format_table(rows))
    out = ROOT / "bench" / "results" / "memory_table.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"benchmark": "memory_table", "dtype": "bfloat16", "rows": rows}, indent=2) + "\n"
    )
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
