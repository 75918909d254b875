"""``python -m benchmarks <name> [args...]``: run one benchmark; no name (or ``--help``) lists them.

Run from the repository root (``benchmarks`` is a package of the checkout, not of the installed
project); ``python -m benchmarks <name> --help`` gives a benchmark's own options. Figures, each with
the command that measured it: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

#: command name -> module of this package (its ``main(argv)`` runs it; its docstring's first paragraph describes it)
BENCHMARKS = {
    "sensors-qa": "sensors_qa",
    "cube": "cube_bench",
    "embeddings": "embeddings",
    "embeddings-fuel-moisture": "embeddings_fuel_moisture",
    "uncertainty-fuel-moisture": "uncertainty_fuel_moisture",
    "uncertainty-map-memory": "uncertainty_map_memory",
    "compression-rd": "compression_rd",
    "compression-settings": "compression_settings",
    "compression-downstream": "compression_downstream",
    "chain-scale": "chain_scale",
}


def describe(module: str) -> str:
    """First paragraph of a benchmark module's docstring, on one line, read without importing the module
    (no torch, no Dask)."""
    tree = ast.parse((Path(__file__).parent / f"{module}.py").read_text(encoding="utf-8"))
    return " ".join((ast.get_docstring(tree) or "").strip().split("\n\n")[0].split())


def usage() -> str:
    width = max(map(len, BENCHMARKS))
    rows = "\n".join(f"  {name:<{width}}  {describe(module)}" for name, module in BENCHMARKS.items())
    return (
        "usage: python -m benchmarks <name> [args...]   (python -m benchmarks <name> --help for its options)\n\n"
        f"benchmarks:\n{rows}\n\nfigures: benchmarks/RESULTS.md"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help", "list"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{BENCHMARKS[name]}")
    sys.argv = [f"python -m benchmarks {name}", *rest]  # argparse's prog in usage and errors
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
