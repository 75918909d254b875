"""The ``eocube`` command line (also ``python -m pipeline``): one package above the stages.

Each module holds one group of commands and calls the chain (:mod:`pipeline.chain`) or a
stage's functions; :mod:`pipeline.cli.common` holds what they share. Nothing below imports it.
"""

from __future__ import annotations

import sys

import typer
from typer.exceptions import TyperException

from pipeline.cli import common
from pipeline.cli.common import console, print_error, quiet_libraries

quiet_libraries(common.DEBUG)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Earth-observation data cubes: STAC search -> cloud-masked cube -> embeddings, "
    "uncertainty, video -> analysis-ready Zarr.",
)


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="show library logs and full tracebacks (redacted)"),
) -> None:
    common.set_debug(debug)


def _mount() -> None:
    from pipeline.cli import compress, cube, embed, run, sensors, store, uncertainty

    for command in run.app.registered_commands:
        app.registered_commands.append(command)
    app.command("status")(store.status)
    app.command("backfill")(store.backfill)
    app.add_typer(sensors.app, name="sensors", help="Sensor profiles and QA decoding.")
    app.add_typer(cube.app, name="cube", help="Cube utilities: temporal composites of a store.")
    app.add_typer(embed.app, name="embed", help="Foundation-model embeddings of a cube store.")
    app.add_typer(uncertainty.app, name="uncertainty", help="Temporal-dropout uncertainty regression.")
    app.add_typer(compress.app, name="compress", help="Video compression of cubes.")
    app.add_typer(store.app, name="store", help="Stores: backfill, update, status, STAC.")


_mount()


#: the exit code after ctrl-c (128 + SIGINT), as shells report it
INTERRUPTED = 130


def main() -> None:
    """Entry point of the ``eocube`` console script: any error is one line (exit 1), the traceback with ``--debug``."""
    interrupted = (
        "interrupted: nothing half-made is left under the output name; the same command again resumes where it stopped"
    )
    try:
        code = app(standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        code = INTERRUPTED
    except TyperException as exc:  # a usage error (typer's click): its own message; with no arguments, the help
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.exit(0)
        exc.show()  # type: ignore[attr-defined]
        sys.exit(getattr(exc, "exit_code", 2))
    except Exception as exc:  # not a user error (those exit 2 inside the commands)
        print_error(exc, prefix=f"{type(exc).__name__}: ")
        if not common.DEBUG:
            console.print("(run again with eocube --debug to see the traceback)", highlight=False)
        sys.exit(1)
    if code == INTERRUPTED:  # typer turns ctrl-c inside a command into this exit code
        console.print(interrupted, highlight=False, soft_wrap=True)
    sys.exit(code if isinstance(code, int) else 0)
