"""docker-compose.yml against the Compose Specification JSON schema, and every service's
command against the console scripts the image installs (no Docker engine here).

``tests/data/compose-spec.json`` is the public Compose Specification schema as vendored
by docker-compose 1.29.2 (``compose/config/compose_spec.json``)."""

from __future__ import annotations

import json
import re
import shlex
from importlib.metadata import distributions
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHELL_BUILTINS = {"exec", "cd", "test", "true"}


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _console_scripts() -> set[str]:
    return {ep.name for d in distributions() for ep in d.entry_points if ep.group == "console_scripts"}


def _executables(command: list[str]) -> list[str]:
    """The programs a service runs: argv[0], or each program of an ``sh -c`` script."""
    if command[:2] != ["sh", "-c"]:
        return [command[0]]
    programs = []
    for part in re.split(r"&&|\|\||;", command[2]):
        words = [w for w in shlex.split(part) if w not in SHELL_BUILTINS]
        if words:
            programs.append(words[0])
    return programs


def test_compose_file_follows_the_compose_specification():
    schema = json.loads((REPO / "tests/data/compose-spec.json").read_text())
    compose = _compose()
    jsonschema.validate(compose, schema)
    broken = {
        **compose,
        "services": {**compose["services"], "jupyter": {**compose["services"]["jupyter"], "ports": 8888}},
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_stack_has_the_required_services_wired_together():
    services = _compose()["services"]
    assert {
        "postgres",
        "prefect-server",
        "prefect-worker",
        "dask-scheduler",
        "dask-worker",
        "dask-gpu-worker",
        "jupyter",
        "stac-api",
    } <= set(services)
    assert "postgresql+asyncpg://" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    gpu = services["dask-gpu-worker"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "--resources" in gpu["command"] and gpu["command"][gpu["command"].index("--resources") + 1] == "GPU=1"
    for name in ("prefect-worker", "jupyter", "dask-worker"):
        assert services[name]["environment"]["DASK_SCHEDULER_ADDRESS"] == "tcp://dask-scheduler:8786", name
    built = {n for n, s in services.items() if s.get("build")}
    assert built and all(services[n]["build"]["dockerfile"] == "Dockerfile" for n in built)
    assert len({services[n]["image"] for n in built}) == 1, "one image for every eocube service"


def test_every_service_command_is_an_installed_console_script():
    """Commands of services built from our Dockerfile must be console scripts of the project's environment."""
    scripts = _console_scripts()
    services = _compose()["services"]
    checked = 0
    for name, service in services.items():
        if not service.get("build"):
            continue
        for program in _executables(service["command"]):
            assert program in scripts, f"service {name}: {program!r} is not a console script of the image"
            checked += 1
    assert checked >= 8
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r'pip install .*"\.\[test\]"', dockerfile), "the image must install the project itself"
