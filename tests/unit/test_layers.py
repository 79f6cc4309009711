"""The layers of kiss_core as a rule: imports point down, never into Ray or the web framework, no cycles.

media → faces, safety → scene → generation → jobs | curation → training; the shared modules
(settings, errors, schemas, storage, keys, tracing) sit under every layer and import only each other.
cli is on top. Imports inside functions and under TYPE_CHECKING count too: a lazy import is still
a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = {"settings", "errors", "schemas", "storage", "keys", "tracing"}
# config_docs is a top-level tool like cli, one rank under it: cli runs it as `kissgen config-docs`.
RANK = {
    "media": 1,
    "faces": 2,
    "safety": 2,
    "scene": 3,
    "generation": 4,
    "jobs": 5,
    # Offline: curation beside jobs (it reuses faces, scene, generation); training reads the curated set.
    "curation": 5,
    "training": 6,
    "config_docs": 7,
    "cli": 8,
}
# The request schema applies the prompt policy while parsing: the one shared → layer edge, to a leaf
# module that imports nothing of kiss_core.
ALLOWED_UPWARD = {("kiss_core.schemas", "kiss_core.safety.prompt")}
FORBIDDEN = ("ray", "fastapi", "starlette")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in (ROOT / "kiss_core").rglob("*.py")}
    return {m: imports(p) for m, p in modules.items()}


def layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def rank(module: str) -> int:
    name = layer(module)
    return 0 if name in SHARED else RANK[name]


def test_every_kiss_core_module_belongs_to_a_layer():
    unplaced = [m for m in graph() if m != "kiss_core" and layer(m) not in SHARED | set(RANK)]
    assert unplaced == [], f"modules outside every layer: {unplaced}"


def test_imports_point_down():
    modules = graph()
    upward = []
    for module, targets in modules.items():
        if module == "kiss_core":
            continue
        for target in sorted(t for t in targets if t in modules and t != "kiss_core"):
            same_layer = layer(target) == layer(module) or rank(target) == rank(module) == 0
            if not same_layer and rank(target) >= rank(module) and (module, target) not in ALLOWED_UPWARD:
                upward.append(f"{module} -> {target}")
    assert upward == [], "imports that point up or sideways:\n" + "\n".join(upward)


def test_kiss_core_imports_neither_ray_nor_the_web_framework():
    bad = sorted(f"{m} -> {t}" for m, ts in graph().items() for t in ts if t.split(".")[0] in FORBIDDEN)
    assert bad == []


def test_no_import_cycles():
    modules = graph()
    edges = {m: {t for t in ts if t in modules and t != m} for m, ts in modules.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_deployments_and_graph_sit_above_kiss_core():
    upward = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "kiss_core").rglob("*.py")
        if any(i.split(".")[0] in ("deployments", "graph", "workflows") for i in imports(p))
    ]
    assert upward == []
