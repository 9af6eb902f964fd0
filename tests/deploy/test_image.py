"""The container image runs the CLI the tests run, as a non-root user.

No image can be built here, so these tests read ``deploy/Dockerfile`` and
run its commands (entry point, health check) with this checkout's Python.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath

from consumer.health import Health, HealthServer
from consumer.settings import ENVIRONMENT
from tests.deploy.files import (
    REPO,
    copy_sources,
    dockerfile_stages,
    dockerignore_excludes,
    healthcheck_command,
    unknown_variables,
)

BASE_IMAGE = "python:3.11-slim"
CONSOLE_SCRIPT = "crisp-lifecycle"
#: Variables of the image that are not settings of the service.
RUNTIME_VARIABLES = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def _cli_help(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


def test_entrypoint_and_cmd_run_the_console_script_the_tests_run() -> None:
    """ENTRYPOINT + CMD is `crisp-lifecycle run`, the command of the harness.

    pyproject must map the console script to ``consumer.cli:main``, which is
    also what ``python -m consumer`` (the service tests) runs; the installed
    script given the image's arguments must print the same usage as the
    module, so both reach the same parser and the same ``run`` command.
    """
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get(CONSOLE_SCRIPT) == "consumer.cli:main"
    main_module = (REPO / "consumer" / "__main__.py").read_text()
    assert "from consumer.cli import main" in main_module

    runtime = dockerfile_stages()[-1]
    entrypoint = runtime.last("ENTRYPOINT").exec_form()
    cmd = runtime.last("CMD").exec_form()
    assert entrypoint == [CONSOLE_SCRIPT]
    assert cmd == ["run"]

    script = _venv_bin() / CONSOLE_SCRIPT
    assert script.is_file(), f"{script} missing: run `make venv`"
    by_script = _cli_help([str(script), *entrypoint[1:], *cmd])
    by_module = _cli_help([sys.executable, "-m", "consumer", *cmd])
    assert by_script.returncode == 0, by_script.stderr
    assert by_module.returncode == 0, by_module.stderr
    assert "--until-caught-up" in by_script.stdout
    assert by_script.stdout == by_module.stdout


def test_healthcheck_calls_healthz_and_fails_with_it(
    health_server: tuple[Health, HealthServer],
) -> None:
    """The HEALTHCHECK command exits 0 on a healthy /healthz, non-zero after.

    The command is run as the image would run it, with the health port in
    LIFECYCLE_HEALTH_PORT, against a real health server: healthy, then
    marked failed (as on a stalled loop), then gone.
    """
    health, server = health_server
    command = healthcheck_command(dockerfile_stages()[-1])
    assert any("/healthz" in word for word in command), command
    assert command[0] == "python", "the image has no other interpreter on PATH"
    argv = [sys.executable, *command[1:]]
    env = {**os.environ, "LIFECYCLE_HEALTH_PORT": str(server.port)}

    def check() -> int:
        return subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode

    assert check() == 0
    health.fail("poll loop stalled")
    assert check() != 0
    server.stop()
    assert check() != 0


def test_image_is_multi_stage_slim_non_root_with_the_plan_baked_in() -> None:
    """Every stage builds on python:3.11-slim; the last runs as a plain user.

    The plan sits at /app/plans where a mount can replace it, LIFECYCLE_PLAN
    names a plan the repository ships, health listens beyond loopback (or
    probes from outside fail), and every variable set is a real setting.
    """
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: build, then a clean runtime"
    assert {stage.base for stage in stages} == {BASE_IMAGE}
    runtime = stages[-1]

    user = runtime.last("USER").arguments.split(":")[0]
    assert user not in {"root", "0"}, "the image must not run as root"
    assert any("--from" in i.arguments for i in runtime.all("COPY")), (
        "the runtime stage copies the build's result, it does not rebuild"
    )

    env = runtime.environment()
    assert unknown_variables(set(env) - RUNTIME_VARIABLES) == []
    plan = PurePosixPath(env[ENVIRONMENT["plan"][0]])
    assert plan.parent == PurePosixPath("/app/plans")
    assert (REPO / "plans" / plan.name).is_file()
    assert "plans /app/plans" in [i.arguments for i in runtime.all("COPY")]
    assert env[ENVIRONMENT["health_host"][0]] == "0.0.0.0"


def test_every_copied_path_exists_and_reaches_the_build_context() -> None:
    """Each COPY source exists and .dockerignore does not filter it out.

    A path that is ignored or missing fails ``docker build`` only on a
    machine that has Docker; this catches it here.
    """
    sources = [src for stage in dockerfile_stages() for src in copy_sources(stage)]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such path"
        assert not dockerignore_excludes(source), f".dockerignore drops {source}"
    assert dockerignore_excludes(".venv")
    assert dockerignore_excludes(".run/redis/redis.log")
    assert dockerignore_excludes("consumer/__pycache__/cli.cpython-311.pyc")
