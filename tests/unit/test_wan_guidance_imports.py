"""The GPU bench imports `guidance` on a machine with torch but without the service's stack."""

from __future__ import annotations

import json
import subprocess
import sys


def test_importing_the_batched_guidance_loads_none_of_the_service_stack() -> None:
    """A fresh interpreter imports the module and lists what came with it: torch, never pydantic or faces."""
    probe = (
        "import json, sys\n"
        "import kiss_core.generation.backends.guidance\n"
        "heavy = ('pydantic', 'pydantic_settings', 'dlib', 'cv2', 'insightface', 'onnxruntime', 'ray',"
        " 'yaml')\n"
        "print(json.dumps({'loaded': [m for m in heavy if m in sys.modules],"
        " 'kiss_core': sorted(m for m in sys.modules if m.startswith('kiss_core'))}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    assert modules["loaded"] == []
    assert modules["kiss_core"] == [
        "kiss_core",
        "kiss_core.generation",
        "kiss_core.generation.backends",
        "kiss_core.generation.backends.guidance",
    ]
