"""Headless rendering backend: probed once, EGL before OSMesa, the user's choice wins, clear error."""

from __future__ import annotations

import pytest

from envs import rendering


def test_probe_picks_a_working_backend_and_exports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    tried = []
    monkeypatch.setattr(
        rendering, "backend_works", lambda backend: tried.append(backend) or backend == "osmesa"
    )
    assert rendering.choose_rendering_backend() == "osmesa"
    assert tried == ["egl", "osmesa"]
    import os

    assert os.environ["MUJOCO_GL"] == os.environ["PYOPENGL_PLATFORM"] == "osmesa"  # inherited by workers


def test_the_users_choice_is_not_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUJOCO_GL", "egl")
    monkeypatch.setattr(rendering, "backend_works", lambda backend: pytest.fail("probed"))
    assert rendering.choose_rendering_backend() == "egl"


def test_no_backend_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(rendering, "backend_works", lambda backend: False)
    with pytest.raises(rendering.RenderingUnavailable, match="MUJOCO_GL"):
        rendering.choose_rendering_backend()


@pytest.mark.slow
def test_egl_renders_on_this_machine() -> None:
    assert rendering.backend_works("egl")  # Mesa's software EGL here, the GPU's on GPU machines
