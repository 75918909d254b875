"""MkDocs hooks of the eocube documentation site (``mkdocs.yml``: ``hooks:``).

* Reference tables are generated from the code at build time, so they cannot go stale: a page
  writes a directive such as ``<!-- eocube:model pipeline.model.CubeRequest -->`` and the hook
  replaces it with the table (:data:`DIRECTIVES`).
* ``benchmarks/RESULTS.md`` and the figures it links are added to the site, and every relative
  link of every page is resolved against the page's place *in the repository* (so the same link
  works on a code host and in the site): links to ``docs/...`` and to the added benchmark files
  become site links, links to other repository files (source, tests) become code spans naming
  the file.
* Sphinx roles in docstrings (``:func:`x```) render as code in the API reference.

The hooks import ``pipeline`` (no network, no cluster; torch only for the encoder table).
"""

from __future__ import annotations

import ast
import json
import posixpath
import re
import sys
import typing
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # a checkout that is not installed still builds
    sys.path.insert(0, str(REPO))

#: repository files outside docs/ published in the site, at the same path
EXTRA_FILES = ["benchmarks/RESULTS.md"]
EXTRA_TREES = ["benchmarks/figures", "benchmarks/uncertainty"]
EXTRA_SUFFIXES = {".md", ".png", ".json", ".svg"}

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_LINK = re.compile(r"(!?)\[([^\]\n]*)\]\(([^)\s]+)(\s+\"[^\"]*\")?\)")
_DIRECTIVE = re.compile(r"<!--\s*eocube:([\w-]+)\s*(.*?)\s*-->")
_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|data|attr|exc|obj|const):<code>~?([^<]+)</code>")


# ------------------------------------------------------------------------------------------ files


def _repo_files() -> list[str]:
    out = [p for p in EXTRA_FILES if (REPO / p).is_file()]
    for tree in EXTRA_TREES:
        out += sorted(
            str(p.relative_to(REPO)) for p in (REPO / tree).rglob("*") if p.is_file() and p.suffix in EXTRA_SUFFIXES
        )
    return out


def on_files(files: Files, config: Any) -> Files:
    for rel in _repo_files():
        if files.get_file_from_path(rel) is None:
            files.append(File.generated(config, rel, abs_src_path=str(REPO / rel)))
    return files


def _repo_path(src_uri: str, config: Any) -> str:
    """Where a site file lives in the repository."""
    if src_uri in _repo_files():
        return src_uri
    docs = Path(config["docs_dir"]).resolve().relative_to(REPO)
    return posixpath.join(str(docs), src_uri)


def _site_path(repo_path: str, config: Any, files: Files) -> str | None:
    """The site file (src_uri) of a repository path, or None if it is not published."""
    docs = str(Path(config["docs_dir"]).resolve().relative_to(REPO))
    if repo_path.startswith(docs + "/"):
        candidate = repo_path[len(docs) + 1 :]
    else:
        candidate = repo_path
    if candidate.endswith("/"):
        candidate += "index.md"
    return candidate if files.get_file_from_path(candidate) is not None else None


def _rewrite_links(markdown: str, page: Any, config: Any, files: Files) -> str:
    here = posixpath.dirname(_repo_path(page.file.src_uri, config))
    site_dir = posixpath.dirname(page.file.src_uri)

    def one(m: re.Match) -> str:
        bang, text, target, title = m.group(1), m.group(2), m.group(3), m.group(4) or ""
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
            return m.group(0)
        path, _, anchor = target.partition("#")
        repo_target = posixpath.normpath(posixpath.join(here, path)) + ("/" if path.endswith("/") else "")
        site = _site_path(repo_target, config, files)
        if site is None:  # a repository file the site does not publish: name it
            name = repo_target.rstrip("/") + ("/" if path.endswith("/") else "")
            code = f"`{name}`"
            return code if text.strip("`") in (path, name, name.rstrip("/")) else f"{text} ({code})"
        rel = posixpath.relpath(site, site_dir or ".")
        return f"{bang}[{text}]({rel}{'#' + anchor if anchor else ''}{title})"

    parts, last = [], 0
    for fence in _FENCE.finditer(markdown):
        parts.append(_LINK.sub(one, markdown[last : fence.start()]))
        parts.append(fence.group(0))
        last = fence.end()
    parts.append(_LINK.sub(one, markdown[last:]))
    return "".join(parts)


# ------------------------------------------------------------------------------------------ directives


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


#: what a field means where ``pipeline/model.py`` gives it no ``description`` (the code's description wins)
FIELD_MEANINGS = {
    "CubeRequest.bbox": "(min_lon, min_lat, max_lon, max_lat) in degrees; exactly one of bbox and geometry",
    "CubeRequest.geometry": "a GeoJSON Polygon or MultiPolygon (or a Feature/FeatureCollection of them) in lon/lat",
    "CubeRequest.start": "first day, inclusive (UTC)",
    "CubeRequest.end": "last day, inclusive (UTC)",
    "CubeRequest.crs": "output CRS (anything pyproj parses); null: the UTM zone of the area's centre",
    "CubeRequest.mask": "which QA flags remove a pixel (MaskPolicyRequest)",
    "CubeRequest.chunks": "Dask chunks of the cube, which are also the store's Zarr chunks",
    "CubeRequest.output": "the store's path (an existing eocube store is replaced only with overwrite)",
    "CompositeRequest.method": "per-pixel statistic of each bin: median, mean, best, count or geomedian",
    "EmbedRequest.input": "the product embedded: the composite (needs a composite section) or the cube",
    "EmbedRequest.temporal": "pooled: one vector per pixel or patch; per-time-step: one per time step",
    "CompressRequest.mode": "lossy (12-bit libx265) or lossless (ffv1)",
    "CompressRequest.target_psnr": "rate control: PSNR target, dB (peak = the value range's width)",
    "CompressRequest.target_bpppb": "rate control: bits per pixel per band",
    "CompressRequest.qp": "a fixed libx265 QP, -8 (finest) .. 49, fractions allowed",
    "MaskPolicyRequest.drop": "flag names that remove a pixel (null: the default policy's)",
    "MaskPolicyRequest.min_cloud_confidence": "Landsat: cloud means confidence >= this level (low, medium, high)",
}


def _type_name(annotation: Any) -> str:
    """A pydantic field annotation in words a request file writer reads."""
    import datetime as dt

    from pydantic import BaseModel

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " \\| ".join(_type_name(a) for a in args)
    if origin in (list, tuple, dict):
        inner = ", ".join(_type_name(a) for a in args if a is not Ellipsis)
        return {list: "list", tuple: "tuple", dict: "mapping"}[origin] + (f" of {inner}" if inner else "")
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    if annotation is dt.date:
        return "date (YYYY-MM-DD)"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "**required**"
    else:
        value = field.default
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return f"`{json.dumps(value, default=str)}`"


def _import(dotted: str) -> Any:
    import importlib

    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def model_table(arg: str) -> str:
    """``model pipeline.model.CubeRequest``: one row per field (name, type, default, meaning)."""
    model = _import(arg)
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        meaning = field.description or FIELD_MEANINGS.get(f"{model.__name__}.{name}", "")
        rows.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {_cell(meaning)} |")
    return "\n".join(rows)


def _param_row(param: Any) -> str:
    if param.param_type_name == "argument":
        name = f"`{(param.metavar or param.name).upper()}`"
        kind = "argument" + ("" if param.required else ", optional")
    else:
        name = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
        kind = "flag" if getattr(param, "is_flag", False) else "option"
        if param.required:
            kind += ", required"
    default = param.default
    if default is None or default == () or callable(default) or getattr(param, "is_flag", False) and default is False:
        shown = ""
    else:
        shown = f"`{default}`"
    env = f" (env `{param.envvar}`)" if getattr(param, "envvar", None) else ""
    return f"| {name} | {kind} | {shown} | {_cell((getattr(param, 'help', None) or '') + env)} |"


def cli_reference(arg: str) -> str:
    """``cli``: every ``eocube`` command with its arguments and options, from the command line's own definition."""
    import typer

    from pipeline.cli import app

    root = typer.main.get_command(app)
    out: list[str] = []

    def subcommands(cmd: Any) -> list[tuple[str, Any]]:
        if not hasattr(cmd, "list_commands"):
            return []
        ctx = cmd.context_class(cmd)
        return [(name, cmd.get_command(ctx, name)) for name in cmd.list_commands(ctx)]

    def walk(cmd: Any, path: list[str]) -> None:
        children = subcommands(cmd)
        if children:
            for name, child in children:
                walk(child, [*path, name])
            return
        out.append(f"### `{' '.join(path)}`\n")
        out.append(_cell((cmd.help or "").strip().split("\n\n")[0]) + "\n")
        params = [p for p in cmd.params if p.name != "help"]
        if params:
            out.append("| name | kind | default | meaning |\n|---|---|---|---|")
            out.extend(_param_row(p) for p in params)
        out.append("")

    for name, cmd in subcommands(root):
        walk(cmd, ["eocube", name])
    return "\n".join(out)


def catalogs_table(arg: str) -> str:
    """``catalogs``: every catalog YAML, its API, signing and the sensor names it serves."""
    from pipeline.catalog.config import known_catalogs, load_catalog

    rows = ["| catalog | kind | API | signing | sensor name → collection (profile) |", "|---|---|---|---|---|"]
    for name in known_catalogs():
        c = load_catalog(name)
        sensors = "<br>".join(f"`{s}` → `{r.collection}` ({c.profile_for(s)})" for s, r in c.collections.items())
        rows.append(f"| `{name}` | {c.kind} | {c.url or '(loopback, started per search)'} | {c.signing} | {sensors} |")
    return "\n".join(rows)


def profiles_table(arg: str) -> str:
    """``profiles``: every sensor profile, its bands and QA rules, and the collections mapped to it."""
    from pipeline.sensors.profiles import collection_table, known_profiles, load_profile

    by_profile: dict[str, list[str]] = {}
    for cid, entry in collection_table().items():
        for pid in entry.candidates:
            by_profile.setdefault(pid, []).append(cid)
    rows = ["| profile | sensor | bands | QA asset (rule) | collections |", "|---|---|---|---|---|"]
    for pid in known_profiles():
        p = load_profile(pid)
        qa = ", ".join(f"`{q.asset}` ({q.rule})" for q in p.qa)
        rows.append(
            f"| `{pid}` | {p.sensor} | {', '.join(p.common_names)} | {qa} | "
            f"{', '.join(f'`{c}`' for c in by_profile.get(pid, []))} |"
        )
    return "\n".join(rows)


def encoders_table(arg: str) -> str:
    """``encoders``: the encoder registry (``pipeline.embeddings.registry.ENCODERS``)."""
    from pipeline.embeddings.registry import ENCODERS

    rows = ["| name | kind | aliases | weights file | source | normalisation |", "|---|---|---|---|---|---|"]
    for name, spec in ENCODERS.items():
        src = spec.source
        where = f"{src.hf_repo} (Hugging Face)" if src.hf_repo else (src.url or "")
        rows.append(
            f"| `{name}` | {spec.kind} | {', '.join(f'`{a}`' for a in spec.aliases)} | `{src.filename}` | "
            f"{_cell(where)} | {_cell(spec.normalisation)} |"
        )
    return "\n".join(rows)


def codecs_table(arg: str) -> str:
    """``codecs``: the video codec registry (``pipeline.compression.video.VIDEO_CODECS``)."""
    from pipeline.compression.codec import DEFAULT_CODECS
    from pipeline.compression.video import VIDEO_CODECS

    default_for = {v: k for k, v in DEFAULT_CODECS.items()}
    rows = [
        "| name | FFmpeg encoder / decoder | lossless | pixel formats (planes, bits) | frame padding | default for |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in VIDEO_CODECS.items():
        fmts = ", ".join(f"{k}: `{v}`" for k, v in c.pix_fmts.items())
        pad = f"≥ {c.min_width} × {c.min_height}, multiple of {c.align}" if c.align > 1 or c.min_height > 1 else "none"
        rows.append(
            f"| `{name}` | `{c.encoder}` / `{c.decoder}` | {'yes' if c.lossless else 'no'} | {fmts} | {pad} | "
            f"{default_for.get(name, '')} |"
        )
    return "\n".join(rows)


def products_table(arg: str) -> str:
    """``products``: the product registry (``pipeline.chain.products.PRODUCTS``)."""
    import inspect

    from pipeline.chain.products import PRODUCTS

    sections = {"composite": "composite", "embeddings": "embed", "uncertainty": "uncertainty", "video": "compress"}
    sources = {
        "composite": "the cube",
        "embeddings": "`embed.input`: the composite or the cube",
        "uncertainty": "the artefact's input product (card `inputs.product`)",
        "video": "the cube",
    }
    rows = ["| group | request section | made from | maker |", "|---|---|---|---|"]
    for name, p in PRODUCTS.items():
        doc = (inspect.getdoc(p.make) or "").split("\n")[0]
        rows.append(
            f"| `{name}` | `{sections.get(name, '?')}` | {sources.get(name, '?')} | `{p.make.__name__}`: {_cell(doc)} |"
        )
    return "\n".join(rows)


def _architecture_layers() -> list[set[str]]:
    """The layers the architecture test enforces (read from tests/test_architecture.py, not imported)."""
    tree = ast.parse((REPO / "tests" / "test_architecture.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "LAYERS" for t in node.targets):
            return [set(ast.literal_eval(e)) for e in node.value.elts]  # type: ignore[attr-defined]
    raise RuntimeError("tests/test_architecture.py defines no LAYERS")


def _package_imports() -> dict[str, set[str]]:
    """``pipeline`` package -> the other ``pipeline`` packages its modules import (from the source)."""
    root = REPO / "pipeline"
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        here = path.relative_to(root).parts[0].removesuffix(".py")
        if here.startswith("__"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                if name.startswith("pipeline."):
                    there = name.split(".")[1]
                    if there != here and not there.startswith("_"):
                        graph.setdefault(here, set()).add(there)
    return graph


def layers_graph(arg: str) -> str:
    """``layers``: a Mermaid graph of the packages of ``pipeline``, one row per layer (lowest at the bottom),
    with every import between packages as drawn from the source."""
    layers = [sorted(n for n in layer if not n.startswith("_")) for layer in _architecture_layers()]
    layers = [layer for layer in layers if layer]
    graph = _package_imports()
    lines = ["```mermaid", "flowchart BT"]
    for i, layer in enumerate(layers):
        lines.append(f'  subgraph L{i}["layer {i}"]')
        lines.extend(f"    {n}[{n}]" for n in layer)
        lines.append("  end")
    lines.append("  flows[flows/ Prefect]:::outside")
    lines.append("  classDef outside stroke-dasharray: 4 4")
    for here in sorted(graph):
        for there in sorted(graph[here]):
            lines.append(f"  {here} --> {there}")
    lines.append("  flows --> chain")
    lines.append("```")
    return "\n".join(lines)


def layers_table(arg: str) -> str:
    """``layers-table``: the layers and, per package, the packages it imports."""
    graph = _package_imports()
    rows = ["| layer | package | imports |", "|---|---|---|"]
    for i, layer in enumerate(_architecture_layers()):
        for name in sorted(layer):
            if name.startswith("_"):
                continue
            rows.append(f"| {i} | `pipeline.{name}` | {', '.join(sorted(graph.get(name, ()))) or '—'} |")
    return "\n".join(rows)


DIRECTIVES = {
    "model": model_table,
    "cli": cli_reference,
    "catalogs": catalogs_table,
    "profiles": profiles_table,
    "encoders": encoders_table,
    "codecs": codecs_table,
    "products": products_table,
    "layers": layers_graph,
    "layers-table": layers_table,
}


def _expand(markdown: str) -> str:
    def one(m: re.Match) -> str:
        name, arg = m.group(1), m.group(2)
        if name not in DIRECTIVES:
            raise ValueError(f"unknown docs directive eocube:{name}; known: {sorted(DIRECTIVES)}")
        return DIRECTIVES[name](arg)

    return _DIRECTIVE.sub(one, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    return _rewrite_links(_expand(markdown), page, config, files)


def on_page_content(html: str, page: Any, config: Any, files: Files) -> str:
    return _ROLE.sub(
        lambda m: f"<code>{m.group(1).rsplit('.', 1)[-1] if m.group(0).count('~') else m.group(1)}</code>", html
    )
