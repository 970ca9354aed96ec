"""Import LIBERO headless, without its interactive question and without hub downloads.

LIBERO (the ``hf-libero`` package, and LIBERO-Plus, which installs itself under the same name)
reads ``$LIBERO_CONFIG_PATH/config.yaml`` at import and *asks on stdin* when it is missing; hf-libero
then downloads its scene assets from the hub on first use. So before the import we write that file
into a project-controlled directory and afterwards point LIBERO at a local assets folder
(``env.simulator.assets_dir`` or ``$LIBERO_ASSETS``), failing with a message that names both when
neither holds the assets.

Only NumPy-level dependencies: env workers of a LIBERO-Plus environment import this module too.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import tempfile
from pathlib import Path
from types import ModuleType

from envs.rendering import choose_rendering_backend

ASSETS_VARIABLE = "LIBERO_ASSETS"
CONFIG_VARIABLE = "LIBERO_CONFIG_PATH"
#: folders every LIBERO assets directory has (hf-libero's own completeness check uses the same)
ASSET_FOLDERS = ("articulated_objects", "scenes", "stable_scanned_objects", "textures", "turbosquid_objects")


class LiberoSetupError(RuntimeError):
    """LIBERO cannot run here: not installed, or its assets are missing."""


def resolve_assets(assets_dir: str | None) -> Path:
    """The assets folder from config, else ``$LIBERO_ASSETS``; an error naming both otherwise."""
    candidate = assets_dir or os.environ.get(ASSETS_VARIABLE)
    if not candidate:
        raise LiberoSetupError(
            "LIBERO needs its scene assets: set env.simulator.assets_dir=<dir> or the environment variable "
            f"{ASSETS_VARIABLE}=<dir> (a copy of LIBERO's libero/libero/assets, e.g. from the hub dataset "
            "lerobot/libero-assets)"
        )
    path = Path(candidate).expanduser().resolve()
    missing = [folder for folder in ASSET_FOLDERS if not (path / folder).is_dir()]
    if missing:
        raise LiberoSetupError(
            f"LIBERO assets directory {path} (from env.simulator.assets_dir or ${ASSETS_VARIABLE}) lacks "
            f"{', '.join(missing)}"
        )
    return path


def write_libero_config(config_dir: Path, assets: Path) -> Path:
    """LIBERO's ``config.yaml`` for the installed package; sets ``$LIBERO_CONFIG_PATH`` to its folder."""
    spec = importlib.util.find_spec("libero")  # locates the package without running its import-time prompt
    if spec is None or not spec.submodule_search_locations:
        raise LiberoSetupError(
            "LIBERO is not installed in this Python environment: `make install` installs hf-libero; "
            "LIBERO-Plus installs itself as `libero` in its own environment (see the README)"
        )
    package = Path(next(iter(spec.submodule_search_locations))) / "libero"
    own_assets = package / "assets"
    if (package / "benchmark" / "task_classification.json").is_file() and own_assets.resolve() != assets:
        # LIBERO-Plus ignores config.yaml's `assets`: it opens its scenes and objects under its package
        raise LiberoSetupError(
            f"LIBERO-Plus loads its assets from {own_assets} only, not from {assets}: unzip its assets.zip "
            f"there (or link a copy: ln -s {assets} {own_assets}) and pass that directory"
        )
    config_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "benchmark_root": package,
        "bddl_files": package / "bddl_files",
        "init_states": package / "init_files",
        "datasets": config_dir / "datasets",
        "assets": assets,
    }
    path = config_dir / "config.yaml"
    path.write_text("".join(f"{key}: {value}\n" for key, value in config.items()))
    os.environ[CONFIG_VARIABLE] = str(config_dir)
    return path


def import_libero(assets_dir: str | None = None, config_dir: str | Path | None = None) -> ModuleType:
    """``libero.libero``, configured: headless rendering, silent import, local assets.

    Args:
        assets_dir: LIBERO's assets folder (else ``$LIBERO_ASSETS``).
        config_dir: where to write LIBERO's config (else ``$LIBERO_CONFIG_PATH``, else a temp dir).
    """
    assets = resolve_assets(assets_dir)
    choose_rendering_backend()
    os.environ.setdefault("MESA_SHADER_CACHE_DISABLE", "true")
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "vla-train-numba"))
    default = Path(tempfile.gettempdir()) / "vla-train-libero"
    write_libero_config(Path(config_dir or os.environ.get(CONFIG_VARIABLE) or default), assets)
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
    try:
        import libero.libero as libero
        import robosuite.macros as macros
    except ImportError as error:
        raise LiberoSetupError(f"importing LIBERO failed: {error}") from error
    macros.IMAGE_CONVENTION = "opengl"  # the protocol's 180° rotation is applied explicitly
    libero._assets_path_cache = str(assets)  # hf-libero: use these assets, never download
    return libero


def installed_benchmark_file(name: str) -> Path | None:
    """``libero/libero/benchmark/<name>`` of the installed ``libero`` package (found without importing
    it), or None when no ``libero`` is installed."""
    spec = importlib.util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "libero" / "benchmark" / name


def suite_instructions(suite: str) -> set[str]:
    """The instructions of ``suite``'s tasks, from LIBERO's task table, without importing LIBERO.

    Importing LIBERO needs its config and scene assets; a training node that only selects a suite's
    episodes in the dataset needs neither. The installed package's ``libero_suite_task_map.py`` (a plain
    dict of BDDL problem names) is read on its own, and each name turned into its instruction as LIBERO
    does: words joined by spaces, after the ``…_SCENE<n>_`` prefix of LIBERO-90/10 names.
    """
    table = installed_benchmark_file("libero_suite_task_map.py")
    if table is None:
        raise LiberoSetupError("LIBERO is not installed: pip install hf-libero (or LIBERO-Plus)")
    module_spec = importlib.util.spec_from_file_location("_libero_suite_task_map", table)
    if module_spec is None or not table.is_file():
        raise LiberoSetupError(f"LIBERO's task table is missing: {table}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    names = module.libero_task_map.get(suite)
    if names is None:
        raise ValueError(f"env.simulator.suite={suite!r}: LIBERO has suites {sorted(module.libero_task_map)}")
    return {_instruction(name) for name in names}


def _instruction(problem_name: str) -> str:
    if "SCENE" in problem_name:  # KITCHEN_SCENE3_turn_on_the_stove → turn on the stove
        problem_name = problem_name.split("SCENE", 1)[1].split("_", 1)[1]
    return " ".join(problem_name.split("_"))


#: what LIBERO-Plus appends to an unperturbed task's name, one alternative per perturbation kind (camera
#: view and initial state, with noise or a rewritten instruction; table and light textures, added
#: objects, layout levels): every name of its task_classification.json ends in one
PLUS_NAME_SUFFIX = re.compile(
    r"(_language_\d+)?_view_\d+_\d+_\d+_\d+_\d+_initstate_\d+(_noise_\d+)?$"
    r"|_(table|tb|light|add)_\d+$"
    r"|(_moved)?_level\d+_sample\d+$"
)


def task_instruction(name: str, language: str) -> str:
    """The instruction a task gives the policy. LIBERO's ``language`` is right for LIBERO's tasks, but
    LIBERO-Plus derives ``language`` from the task's name with its perturbation suffix ("pick up the
    milk … view 0 0 177 0 0 initstate 0"): there the policy gets the unperturbed task's instruction, and
    a rewritten-instruction task (``_language_``, read from its BDDL file) keeps its own."""
    if "_language_" in name:
        return language
    base = PLUS_NAME_SUFFIX.sub("", name)
    return language if base == name else _instruction(base)
