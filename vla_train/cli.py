"""How every command reports a failure: one ``error: ...`` line on stderr and a non-zero exit.

A traceback (Hydra prints a truncated one) buries the message a user acts on under frames of library
code. Bad input — the errors our checks raise, missing or existing files — exits with 2, the usual code
for a usage error; anything else exits with 1 and says where it was raised, so that a bug report has a
place to start. Ctrl-C exits with 130 and ``error: interrupted by Ctrl-C (<what was kept>)``.
``VLA_TRAIN_TRACEBACK=1`` lets every error through with its full traceback.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

TRACEBACK_VARIABLE = "VLA_TRAIN_TRACEBACK"

#: errors that describe the user's input (our checks raise ValueError subclasses: ConfigError, ...)
BAD_INPUT: tuple[type[BaseException], ...] = (ValueError, OSError, LookupError)
OUR_PACKAGES = ("vla_train", "policies", "envs")
#: the exit status of a command refused for bad input
BAD_INPUT_STATUS = 2
#: the shell's status for a command stopped by Ctrl-C
INTERRUPTED_STATUS = 130

Function = TypeVar("Function", bound=Callable[..., Any])


def described(error: BaseException) -> str:
    """The error's message in one line, its type where the message alone does not say what went wrong,
    and for an error that is not about the input, where it was raised."""
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())  # one line
    if isinstance(error, KeyError) and error.args:
        message = f"{error.args[0]!r} not found"
    ours = type(error).__module__.split(".")[0] in OUR_PACKAGES  # our messages stand alone
    if not ours or not isinstance(error, BAD_INPUT) or not message:
        message = f"{type(error).__name__}: {message}" if message else type(error).__name__
    if not isinstance(error, BAD_INPUT):
        frames = traceback.extract_tb(error.__traceback__)
        if frames:
            message += f" (raised at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})"
    return message


def interrupted_message(interruption: KeyboardInterrupt) -> str:
    """What a Ctrl-C left behind and how to continue: the interruption's own message where the command
    raised one (``raise KeyboardInterrupt("checkpoint ... saved; continue with ...")``), otherwise that
    what was written before it is kept."""
    detail = str(interruption).strip() or "what was written before it is kept"
    return f"interrupted by Ctrl-C ({detail})"


def exit_on_error(function: Function) -> Function:
    """``function`` with its exceptions turned into ``error: <message>`` and an exit status."""

    @functools.wraps(function)
    def reporting(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except KeyboardInterrupt as interruption:  # what was finished is kept (checkpoints, results files)
            print(f"error: {interrupted_message(interruption)}", file=sys.stderr, flush=True)
            sys.exit(INTERRUPTED_STATUS)
        except Exception as error:
            if os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0"):
                raise
            if is_composition_error(error):  # a script that composes with hydra.compose (scripts/plan.py)
                print(f"error: {hydra_message(error)}", file=sys.stderr, flush=True)
                sys.exit(BAD_INPUT_STATUS)
            error = built_error(error)
            print(f"error: {described(error)}", file=sys.stderr, flush=True)
            sys.exit(BAD_INPUT_STATUS if isinstance(error, BAD_INPUT) else 1)

    return reporting  # type: ignore[return-value]


def built_error(error: Exception) -> Exception:
    """The error a part raised while Hydra's ``instantiate`` built it: Hydra wraps it in a multi-line
    ``InstantiationException`` ("Error in call to target ... full_key: ..."), which would hide the part's
    own message (``backbone.checkpoint=/nope: no such file or directory``) and its type."""
    if "hydra" not in sys.modules:
        return error
    from hydra.errors import InstantiationException

    while isinstance(error, InstantiationException) and isinstance(error.__cause__, Exception):
        error = error.__cause__
    return error


def is_composition_error(error: BaseException) -> bool:
    """Whether ``error`` is Hydra refusing to compose a config from the overrides it was given (a misspelled
    option or key, a wrong type, a malformed override): bad input, reported by :func:`hydra_message`."""
    if "hydra" not in sys.modules:  # nothing composed a config
        return False
    from hydra.errors import ConfigCompositionException, OverrideParseException

    return isinstance(error, ConfigCompositionException | OverrideParseException)


#: lines of Hydra's reports that do not help a user fix the override
_HYDRA_NOISE = ("reference_type=", "object_type=", "To append", "See https://")


def hydra_message(error: BaseException) -> str:
    """Hydra's report of a config it could not compose, in one line: what was wrong, the key, and the
    options there are (the schemas registered in a group and Hydra's search path left out)."""
    pieces: list[str] = []
    for part in (error, error.__cause__):
        if part is None:
            continue
        options: list[str] | None = None  # collecting the lines listed under "Available options in ..."
        for raw in str(part).splitlines():
            line = raw.strip()
            if line.startswith("Config search path"):
                break
            if not line or line.startswith(_HYDRA_NOISE):
                continue
            if options is not None and raw.startswith("\t"):
                if not line.endswith("_schema"):
                    options.append(line)
                continue
            if line.startswith("full_key:") and pieces:
                pieces[-1] += f" ({line})"
                continue
            pieces.append(line)
            if line.startswith("Available options"):
                options = []
        if options is not None:
            pieces[-1] += " " + ", ".join(options)
    override = getattr(error, "override", None)  # a malformed override: Hydra's parser names only the input
    if override:
        pieces.insert(0, f"override {override!r}")
    return "; ".join(piece.rstrip(".") for piece in pieces)


def run_hydra(main: Callable[[], Any]) -> Any:
    """Call a ``@hydra.main`` function so that Hydra's own refusals — found while composing the config: a
    misspelled option or group, an unknown key, a value of the wrong type, a malformed override — end in
    one ``error:`` line and exit 2, as our checks do. ``HYDRA_FULL_ERROR=1`` or ``VLA_TRAIN_TRACEBACK=1``
    keep Hydra's full report."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if any(os.environ.get(name, "") not in ("", "0") for name in ("HYDRA_FULL_ERROR", TRACEBACK_VARIABLE)):
        return main()
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing its report: reported here
    try:
        return main()
    except (HydraException, OmegaConfBaseException) as error:
        print(f"error: {hydra_message(error)}", file=sys.stderr, flush=True)
        sys.exit(BAD_INPUT_STATUS)
    except Exception as error:  # raised in Hydra's own code around the job (ours reports inside it)
        print(f"error: {described(error)}", file=sys.stderr, flush=True)
        sys.exit(BAD_INPUT_STATUS if isinstance(error, BAD_INPUT) else 1)
