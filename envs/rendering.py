"""Headless MuJoCo rendering: EGL when it works here, else OSMesa, else an error naming the fix.

The choice is probed once, in a subprocess (a failed GL initialization can take the process with
it), and stored in ``MUJOCO_GL`` / ``PYOPENGL_PLATFORM`` so env worker processes inherit it. A value
the user set wins and is not probed.
"""

from __future__ import annotations

import os
import subprocess
import sys

BACKENDS = ("egl", "osmesa")
_PROBE = "import mujoco; context = mujoco.GLContext(8, 8); context.make_current(); context.free()"


class RenderingUnavailable(RuntimeError):
    """Neither headless OpenGL backend works on this machine."""


def backend_works(backend: str) -> bool:
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


def choose_rendering_backend() -> str:
    """Set (if unset) and return ``MUJOCO_GL``; must run before MuJoCo or robosuite is imported."""
    chosen = os.environ.get("MUJOCO_GL")
    if chosen is None:
        chosen = next((backend for backend in BACKENDS if backend_works(backend)), None)
        if chosen is None:
            raise RenderingUnavailable(
                "MuJoCo cannot render headless here: neither EGL (libEGL, a GPU driver or Mesa) nor OSMesa "
                "(libOSMesa) works. Install one (e.g. apt install libegl1 or libosmesa6), or set MUJOCO_GL "
                "yourself (egl, osmesa, glfw)."
            )
        os.environ["MUJOCO_GL"] = chosen
    if chosen in BACKENDS:
        os.environ.setdefault("PYOPENGL_PLATFORM", chosen)
    return chosen
