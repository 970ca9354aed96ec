"""The ways in (README commands, CI, Dockerfile) all install the project the same way."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_readme_commands_exist_in_the_makefile_and_ci_runs_the_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for command in ("make demo", "make test"):
        assert command in readme.split("## ")[0], f"the README opens with `{command}`"
        assert re.search(rf"^{command.split()[1]}:", makefile, re.MULTILINE)
    assert re.search(r"^\s*make test\s*$", (ROOT / ".ci" / "run").read_text(), re.MULTILINE)


def test_dockerfile_installs_exactly_as_the_makefile() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^RUN make install\b", dockerfile, re.MULTILINE)
    assert 'pip install -e ".[dev]"' in makefile
    python = re.search(r"^FROM python:(\d+\.\d+)", dockerfile, re.MULTILINE).group(1)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    low, high = re.findall(r"(\d+\.\d+)", requires)
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(low) <= as_tuple(python) < as_tuple(high)


def test_dockerfile_renders_on_the_gpu_and_ships_the_libero_assets() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "MUJOCO_GL=egl" in dockerfile and "graphics" in dockerfile  # the driver's EGL inside the container
    assert re.search(r"^ENV LIBERO_ASSETS=(\S+)", dockerfile, re.MULTILINE)  # read by envs/libero/runtime.py
    assert "lerobot/libero-assets" in dockerfile  # the repository hf-libero itself downloads from
    readme = (ROOT / "README.md").read_text()
    assert "docker build" in readme and "docker run --gpus all" in readme


def test_every_runtime_dependency_is_pinned_to_a_range() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[\[<>=!~ ]", d, maxsplit=1)[0] for d in dependencies}
    assert {
        "torch",
        "transformers",
        "lerobot",
        "accelerate",
        "hydra-core",
        "timm",
        "safetensors",
        "wandb",
    } <= names
    assert all(re.search(r"[<>=]", d) for d in dependencies), (
        "every dependency states the versions it was tested with"
    )
