"""Every code example of the documentation runs: ``README.md`` and ``docs/**/*.md`` (not ``docs/history/``).

How the examples are read (fenced blocks; HTML comments right above a fence are its markers):

* ``python`` blocks run, page by page, in one interpreter per page, in order and sharing their names
  (like a notebook), in a scratch folder; ``console`` blocks (commands after ``$ ``, the other lines
  their output) and ``bash`` blocks (every line a command) run there too when each of their commands is
  an ``eocube`` command (``python -m pipeline`` counts as one);
* ``yaml`` blocks parse; a request (a mapping with ``start`` and ``end``) validates as
  :class:`~pipeline.model.CubeRequest`, with its output moved into the scratch folder, and a block
  marked ``<!-- invalid -->`` must be refused;
* ``<!-- file: NAME -->``: the block is also written to ``NAME`` for the blocks after it;
* ``<!-- skip: REASON -->``: the block is not run, for the reason given (network, Docker, minutes of
  work); every ``python``/``console``/``bash`` block is run or says why not;
* ``<!-- needs: shared -->``: the page runs only where ``../shared`` (released weights) is, with
  ``EOCUBE_WEIGHTS_DIR`` pointing at its models;
* ``<!-- exit: N -->``: the console block's commands exit with ``N``; ``<!-- output -->``: each output
  line it shows appears in what the commands print.

The README runs first, in an empty folder: the store its example makes (``cube.zarr``) is where every
docs page starts (a copy of that folder each), as the pages say. The demo archive is the session's
(``EOCUBE_DEMO_ARCHIVE``). The site itself is built with warnings as errors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
PAGES = [README] + sorted(p for p in DOCS.rglob("*.md") if not {"history", "hooks"} & set(p.relative_to(DOCS).parts))
MARKERS = {"skip", "file", "needs", "exit", "output", "invalid"}
RUN_LANGS = {"python", "console", "bash", "sh"}
#: a page runs inside one interpreter at most this long
PAGE_TIMEOUT_S = 900

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<lang>[\w+-]*)[^\n]*$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<key>[\w-]+)\s*(?::\s*(?P<value>.*?))?\s*-->\s*$")


def _shared_root() -> Path:
    env = os.environ.get("EOCUBE_SHARED")
    return Path(env) if env else REPO.parent / "shared"


@dataclass
class Block:
    page: Path
    line: int  #: 1-based line of the opening fence
    lang: str
    code: str
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    def commands(self) -> list[str]:
        """The shell commands of a console or bash block (``\\`` continuations joined)."""
        lines = self.code.splitlines()
        if self.lang == "console":
            lines = [ln[2:] for ln in _joined(lines, console=True) if ln.startswith("$ ")]
        else:
            lines = [ln for ln in _joined(lines) if ln.strip() and not ln.lstrip().startswith("#")]
        return lines

    def output(self) -> list[str]:
        """The output lines a console block shows (not the commands)."""
        return [ln for ln in _joined(self.code.splitlines(), console=True) if not ln.startswith("$ ") and ln.strip()]

    def runnable(self) -> bool:
        if self.lang == "python":
            return True
        if self.lang in ("console", "bash", "sh"):
            cmds = self.commands()
            return bool(cmds) and all(c.startswith(("eocube ", "python -m pipeline ")) or c == "eocube" for c in cmds)
        return False


def _joined(lines: list[str], console: bool = False) -> list[str]:
    out: list[str] = []
    for ln in lines:
        if out and out[-1].endswith("\\"):
            out[-1] = out[-1][:-1].rstrip() + " " + ln.strip()
        else:
            out.append(ln)
    return out


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page`` with the markers written right above each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group("indent"), m.group("fence"), m.group("lang").lower()
        markers, j = {}, i - 1
        while j >= 0 and (mk := _MARKER.match(lines[j])):
            markers[mk.group("key")] = (mk.group("value") or "").strip()
            j -= 1
        body, k = [], i + 1
        while k < len(lines) and not (
            lines[k].strip().startswith(fence[0] * len(fence)) and lines[k].strip().strip(fence[0]) == ""
        ):
            body.append(lines[k][len(indent) :] if lines[k].startswith(indent) else lines[k].lstrip())
            k += 1
        out.append(Block(page, i + 1, lang, "\n".join(body) + "\n", markers))
        i = k + 1
    return out


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]


# ------------------------------------------------------------------------------------------ static checks


def test_readme_is_a_front_door():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200, "README.md is at most 200 lines; reference belongs in docs/"
    first = next(b for b in blocks(README))
    assert first.commands() == ["make demo", "make test"] or [c.split("#")[0].strip() for c in first.commands()] == [
        "make demo",
        "make test",
    ], "README starts with the two set-up commands: make demo, make test"


def test_every_example_runs_or_says_why_not():
    problems = []
    for b in ALL_BLOCKS:
        unknown = set(b.markers) - MARKERS
        if unknown:
            problems.append(f"{b.where}: unknown marker(s) {sorted(unknown)}; known: {sorted(MARKERS)}")
        if "skip" in b.markers and not b.markers["skip"]:
            problems.append(f"{b.where}: <!-- skip: REASON --> needs a reason")
        if b.lang in RUN_LANGS and not b.runnable() and "skip" not in b.markers:
            problems.append(f"{b.where}: a {b.lang} block that is not run needs <!-- skip: REASON --> above it")
        if b.lang == "console" and b.runnable() and not b.commands():
            problems.append(f"{b.where}: a console block shows its commands after '$ '")
    assert not problems, "\n".join(problems)
    assert sum(b.runnable() and "skip" not in b.markers for b in ALL_BLOCKS) >= 20, "the docs show runnable examples"


def _request_like(data: object) -> bool:
    return isinstance(data, dict) and {"start", "end"} <= set(data)


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.lang == "yaml"], ids=lambda b: b.where)
def test_yaml_examples_parse_and_requests_validate(block: Block, tmp_path: Path):
    from pydantic import ValidationError

    from pipeline.model import CubeRequest

    data = yaml.safe_load(block.code)
    if not _request_like(data):
        assert "invalid" not in block.markers, f"{block.where}: <!-- invalid --> marks a request"
        return
    fields = {**data, "output": str(tmp_path / Path(str(data.get("output", "cube.zarr"))).name)}
    if "invalid" in block.markers:
        with pytest.raises(ValidationError):
            CubeRequest.model_validate(fields)
    else:
        CubeRequest.model_validate(fields)


def test_every_docs_page_is_in_the_site_navigation():
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("", lambda loader, suffix, node: None)  # !!python/name tags of mkdocs.yml
    config = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=Loader)

    def entries(nav: object) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        if isinstance(nav, list):
            return [e for x in nav for e in entries(x)]
        if isinstance(nav, dict):
            return [e for x in nav.values() for e in entries(x)]
        return []

    listed = set(entries(config["nav"]))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts}
    assert not pages - listed, f"pages missing from mkdocs.yml nav: {sorted(pages - listed)}"
    missing = sorted(p for p in listed if p.endswith(".md") and not p.startswith("benchmarks/") and p not in pages)
    assert not missing, f"nav entries without a page: {missing}"


@pytest.mark.slow
def test_docs_site_builds_strictly(tmp_path: Path):
    pytest.importorskip("mkdocs")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-8000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()


# ------------------------------------------------------------------------------------------ running pages

RUNNER = textwrap.dedent('''
    """Run one page's steps (see tests/test_docs.py): python blocks share one namespace, commands run in a shell."""
    import json, os, subprocess, sys, traceback
    from pathlib import Path


    def norm(text):
        return " ".join(text.split())


    def main(spec_path):
        spec = json.loads(Path(spec_path).read_text())
        cluster = None
        if spec["cluster"]:  # one local cluster for the page (its workers start in the page's folder)
            from distributed import LocalCluster

            cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
            os.environ["DASK_SCHEDULER_ADDRESS"] = cluster.scheduler_address
        namespace = {"__name__": "__main__"}
        try:
            for step in spec["steps"]:
                print(f"--- {step['where']} ({step['kind']})", flush=True)
                if step["kind"] == "file":
                    path = Path(step["name"])
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(step["code"])
                elif step["kind"] == "python":
                    exec(compile(step["code"], step["where"], "exec"), namespace)
                else:
                    seen = ""
                    for cmd in step["commands"]:
                        print(f"$ {cmd}", flush=True)
                        done = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=step["timeout"])
                        seen += done.stdout + done.stderr
                        print(done.stdout + done.stderr, flush=True)
                        if done.returncode != step["exit"]:
                            raise SystemExit(f"FAILED at {step['where']}: `{cmd}` exited {done.returncode}, "
                                             f"expected {step['exit']}")
                    for line in step["expect"]:
                        if norm(line) not in norm(seen):
                            raise SystemExit(f"FAILED at {step['where']}: the output lacks the line shown: {line!r}")
        except SystemExit:
            raise
        except BaseException:
            traceback.print_exc()
            raise SystemExit(f"FAILED at {step['where']}")
        finally:
            if cluster is not None:
                cluster.close()


    if __name__ == "__main__":
        main(sys.argv[1])
''')

#: what in a page's examples wants a Dask cluster (else none is started for the page)
_CLUSTER_HINTS = (
    "run_request",
    "backfill_request",
    "update_store",
    "dask_client",
    "eocube run",
    "eocube backfill",
    "eocube store update",
    "eocube cube composite",
    "eocube demo ",
)


def page_steps(page: Path) -> tuple[list[dict], bool, bool]:
    """The steps of a page, whether it wants a cluster, and whether it needs ``../shared``."""
    steps, needs_shared = [], False
    for b in blocks(page):
        needs_shared |= b.markers.get("needs") == "shared"
        if "skip" in b.markers:
            continue
        if "file" in b.markers:
            steps.append({"kind": "file", "where": b.where, "name": b.markers["file"], "code": b.code})
        if b.lang == "python":
            steps.append({"kind": "python", "where": b.where, "code": b.code})
        elif b.runnable():
            steps.append(
                {
                    "kind": "shell",
                    "where": b.where,
                    "commands": b.commands(),
                    "exit": int(b.markers.get("exit", 0)),
                    "timeout": PAGE_TIMEOUT_S,
                    "expect": b.output() if "output" in b.markers else [],
                }
            )
    text = json.dumps(steps)
    return steps, any(h in text for h in _CLUSTER_HINTS), needs_shared


def run_page(page: Path, cwd: Path, env: dict[str, str]) -> None:
    steps, cluster, _ = page_steps(page)
    if not steps:
        return
    cwd.mkdir(parents=True, exist_ok=True)
    spec = cwd.parent / f"{cwd.name}.steps.json"
    spec.write_text(json.dumps({"steps": steps, "cluster": cluster}))
    runner = cwd.parent / "docs_runner.py"
    runner.write_text(RUNNER)
    done = subprocess.run(
        [sys.executable, str(runner), str(spec)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=PAGE_TIMEOUT_S,
    )
    (cwd.parent / f"{cwd.name}.log").write_text(done.stdout + done.stderr)  # what the examples printed
    if done.returncode != 0:
        raise AssertionError(
            f"{page.relative_to(REPO)}: an example failed\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
        )


@pytest.fixture(scope="session")
def docs_env(demo_archive: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "EOCUBE_DEMO_ARCHIVE": str(demo_archive),
        "COLUMNS": "200",
        "NO_COLOR": "1",
        "TERM": "dumb",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    models = _shared_root() / "models"
    if models.is_dir() and "EOCUBE_WEIGHTS_DIR" not in os.environ:
        env["EOCUBE_WEIGHTS_DIR"] = str(models)
    return env


@pytest.fixture(scope="session")
def readme_folder(tmp_path_factory, docs_env: dict[str, str]) -> Path:
    """The folder the README's examples ran in (its store is where every docs page starts)."""
    folder = tmp_path_factory.mktemp("docs") / "README"
    run_page(README, folder, docs_env)
    return folder


@pytest.mark.slow
def test_readme_examples_run(readme_folder: Path):
    assert (readme_folder / "cube.zarr" / "zarr.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    "page", [p for p in PAGES if p != README and page_steps(p)[0]], ids=lambda p: str(p.relative_to(DOCS))
)
def test_docs_examples_run(page: Path, readme_folder: Path, docs_env: dict[str, str]):
    _, _, needs_shared = page_steps(page)
    if needs_shared and not (_shared_root() / "models").is_dir():
        pytest.skip(f"{page.relative_to(REPO)} needs the released weights in {_shared_root() / 'models'}")
    folder = readme_folder.parent / str(page.relative_to(DOCS)).replace("/", "__").removesuffix(".md")
    shutil.copytree(readme_folder, folder, symlinks=True)
    run_page(page, folder, docs_env)
