"""Import robosuite headless, quietly, and without writing outside configured directories."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from types import ModuleType

from envs.rendering import choose_rendering_backend


def import_robosuite() -> ModuleType:
    """robosuite with offscreen EGL rendering (Mesa's software renderer when there is no GPU).

    - ``MUJOCO_GL``: EGL if it works here, else OSMesa (:mod:`envs.rendering`), unless the user chose.
    - numba would cache compiled code inside site-packages and Mesa under ``~/.cache``: both are
      redirected (``NUMBA_CACHE_DIR``) or disabled (``MESA_SHADER_CACHE_DISABLE``) unless set.
    - Images come out upright (``IMAGE_CONVENTION = "opencv"``) rather than OpenGL's upside-down.
    """
    choose_rendering_backend()
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "vla-train-numba"))
    os.environ.setdefault("MESA_SHADER_CACHE_DISABLE", "true")
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)  # "No private macro file found!"
    try:
        import robosuite
        import robosuite.macros as macros
    except ImportError as error:  # pragma: no cover - robosuite is a declared dependency
        raise ImportError("robosuite is not installed; install the project with `make install`") from error
    macros.IMAGE_CONVENTION = "opencv"
    return robosuite
