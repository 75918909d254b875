"""Imports point one way, down the data flow: every package of ``pipeline`` imports only packages of
lower layers, nothing in ``pipeline`` imports ``flows``, and there is no import loop between modules."""

from __future__ import annotations

import ast
from pathlib import Path

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"

#: the layers, lowest first; a package may import its own layer's modules and any lower layer
LAYERS = [
    {"model", "redaction", "_lazy"},
    {"sensors"},
    {"catalog", "demo"},
    {"store"},
    {"cube"},
    {"embeddings"},
    {"uncertainty"},
    {"compression"},
    {"chain"},
    {"cli"},
    {"__init__", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _is_module(name: str) -> bool:
    path = PIPELINE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """The modules a file imports (``from package import module`` counts as importing ``package.module``)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = [f"{node.module}.{a.name}" for a in node.names if _is_module(f"{node.module}.{a.name}")]
            names.update(subs or [node.module])
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def _package(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def module_graph() -> dict[str, set[str]]:
    """``pipeline`` module -> the ``pipeline`` modules it imports (any nesting level)."""
    graph = {}
    for path in PIPELINE.rglob("*.py"):
        module = ".".join(path.relative_to(PIPELINE.parent).with_suffix("").parts).removesuffix(".__init__")
        graph[module] = {m for m in _imports(path) if m == "pipeline" or m.startswith("pipeline.")}
    return graph


def test_every_package_is_in_a_layer():
    packages = {p.name for p in PIPELINE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in PIPELINE.glob("*.py")}
    assert packages | modules <= set(RANK), sorted((packages | modules) - set(RANK))


def test_imports_point_down_the_layers_and_never_at_flows():
    backward = []
    for path in PIPELINE.rglob("*.py"):
        assert not any(m == "flows" or m.startswith("flows.") for m in _imports(path)), f"{path} imports flows"
        here = path.relative_to(PIPELINE).parts[0].removesuffix(".py")
        for module in _imports(path):
            if module.startswith("pipeline.") and module != "pipeline":
                there = module.split(".")[1]
                if there != here and RANK[there] > RANK[here]:
                    backward.append(f"{path.relative_to(PIPELINE.parent)} -> {module}")
    assert not backward, backward


def test_no_import_loop_between_modules():
    graph = module_graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt not in graph or nxt == node:  # a package importing its own submodules
                continue
            if state.get(nxt) == 1:
                raise AssertionError(
                    "import loop: " + " -> ".join(trail[trail.index(nxt) :] + [nxt])
                    if nxt in trail
                    else f"import loop through {nxt}"
                )
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
