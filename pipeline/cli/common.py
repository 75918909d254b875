"""What every ``eocube`` command shares: quiet libraries, one-line errors, progress bars, request files.

User errors (a bad request, an output eocube must not touch, a store that cannot be used)
print ``error: <one line>`` and exit with code 2; anything else prints one line and exits with
1, and ``eocube --debug`` shows the (redacted) traceback and the libraries' logs.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.redaction import SHORT_WARNINGS_ENV, redact

#: stderr: progress, errors; the results go to stdout
console = Console(stderr=True)
#: ``eocube --debug`` or ``EOCUBE_DEBUG=1``: library logs and full (redacted) tracebacks on stderr
DEBUG = os.environ.get("EOCUBE_DEBUG", "").lower() in ("1", "true", "yes")
#: Errors that are the user's to fix: printed as one line, exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError, ConnectionError)


def quiet_libraries(debug: bool) -> None:
    """The progress display, the summary and one-line errors are the output; library chatter and
    the tracebacks Prefect logs for a failed run only with ``--debug``. Set before Prefect and Dask
    configure their logging (they are imported later, by the commands)."""
    os.environ["PREFECT_LOGGING_LEVEL"] = "INFO" if debug else os.environ.get("PREFECT_LOGGING_LEVEL", "CRITICAL")
    os.environ["DASK_LOGGING__DISTRIBUTED"] = (
        "info" if debug else os.environ.get("DASK_LOGGING__DISTRIBUTED", "critical")
    )
    os.environ[SHORT_WARNINGS_ENV] = "0" if debug else "1"
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("ICECHUNK_LOG", "info" if debug else "error")  # Icechunk's own (Rust) log lines
    # after ctrl-c, Dask's cancelled client tasks are collected at exit and asyncio reports each one
    logging.getLogger("asyncio").setLevel(logging.DEBUG if debug else logging.CRITICAL)


def set_debug(debug: bool) -> None:
    global DEBUG
    if debug and not DEBUG:
        DEBUG = True
        quiet_libraries(True)


def one_line(exc: BaseException) -> str:
    """An exception as one redacted line (a pydantic error as ``invalid request: field: message; ...``)."""
    if isinstance(exc, ValidationError):
        text = "invalid request: " + "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
    else:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return redact(" ".join(text.split()))


def print_error(exc: BaseException, prefix: str = "") -> None:
    """``error: <one line>`` on stderr (redacted); with ``--debug`` the redacted traceback first."""
    if DEBUG:
        console.print(redact("".join(traceback.format_exception(exc))), highlight=False, markup=False)
    console.print(f"[bold red]error:[/] {prefix}{one_line(exc)}", highlight=False, soft_wrap=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected errors (a :data:`USER_ERRORS` or a store that cannot be used) into
    ``error: <one line>`` and exit code 2."""
    from pipeline.store.zarr_store import StoreError

    expected: tuple[type[BaseException], ...] = (*USER_ERRORS, StoreError)
    try:
        yield
    except expected as exc:
        print_error(exc)
        raise typer.Exit(2) from None


@contextmanager
def progress_display() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress display; yields a ``progress(stage, done, total)`` callback. The display starts with the
    first progress reported, so a command that fails before any work prints its error line alone."""
    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bar = Progress(*columns, console=console, transient=False)
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    try:
        yield update
    finally:
        if bar.live.is_started:
            bar.stop()


class RequestLoader(yaml.SafeLoader):
    """YAML as a request file is read: a key given twice is an error (not the last one silently), and dates
    stay text, so the request's own validation names the field of a date that does not exist."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


RequestLoader.yaml_implicit_resolvers = {
    k: [(tag, regexp) for tag, regexp in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_request_file(path: Path) -> dict:
    """The fields of a request YAML/JSON file; a missing, malformed or ambiguous file is one line."""
    if path.is_dir():
        raise ValueError(f"request file {path} is a folder; give the request's YAML or JSON file")
    if not path.is_file():
        raise FileNotFoundError(f"request file {path} does not exist")
    try:
        fields = yaml.load(path.read_text(), Loader=RequestLoader)  # noqa: S506 (a SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"request file {path} is not valid YAML/JSON: {' '.join(str(exc).split())}") from None
    if fields is None:
        return {}
    if not isinstance(fields, dict):
        raise ValueError(f"request file {path} must hold a mapping of request fields, not a {type(fields).__name__}")
    return fields


def print_failed_items(failed: dict[str, dict[str, str]], out: Console | None = None) -> None:
    """A table of the items whose reads failed (their pixels masked where they failed), if any."""
    if not failed:
        return
    table = Table(
        "item",
        "asset",
        "reason",
        title=f"{len(failed)} items failed to read (pixels masked where they failed)",
        title_justify="left",
    )
    for item, assets in failed.items():
        for asset, reason in assets.items():
            table.add_row(item, asset, reason)
    (out or Console()).print(table)
