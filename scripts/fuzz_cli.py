#!/usr/bin/env python
"""Bad-input and fault campaign against the command-line programs; prints counts by outcome.

    python scripts/fuzz_cli.py                       # every case (~25 min on 2 CPU cores with --jobs 2)
    python scripts/fuzz_cli.py --only train/ --jobs 2 --timeout 240 --json out.json
    python scripts/fuzz_cli.py --only fault/         # the slower kill / Ctrl-C faults only
    python scripts/fuzz_cli.py --list                # the cases, without running them

It measures the claim "0 hangs, 0 raw tracebacks, 0 silent misreadings, 0 files lost over N cases" for
``train.py``, ``scripts/eval.py``, ``scripts/serve.py`` (its command line, and bad requests to a running
server) and ``scripts/convert_droid.py``. It is a measurement, not a unit test: nothing in the repository
is changed; fixtures (a recorded dataset, one finished smoke run, synthetic DROID recordings) and one
fresh directory per case live under ``--workdir``.

A case expects one of two outcomes:

- ``refused``: a non-zero exit whose stderr ends with one ``error: <message>`` line (argparse's
  ``<prog>: error: ...`` usage line is accepted too, and counted separately) naming the key or file the
  user got wrong, and no ``Traceback`` anywhere in the output;
- ``accepted``: a valid variation that must exit 0 (these catch over-eager checks).

Each result is classified as ``clear`` (as expected), ``raw_traceback`` ("Traceback" in the output, or a
non-zero exit whose last line is not an ``error:`` line), ``unnamed`` (an error line without the key or
file), ``silent`` (exit 0, or actions served, for a refused case), ``wrongly_refused`` (non-zero for an
accepted case), ``hang`` (timeout: the process group is killed), ``file_lost`` (a user's file placed
where the case points its outputs, or protected input data, is missing or changed afterwards), or, for
faults only, ``fault_unmet`` (the process behaved but the fault's own promise was broken: no checkpoint
after Ctrl-C, a wrong exit status, processes left behind), or ``partial_output`` (a refused command
left an output behind: a failed conversion's dataset that a later run would take for a whole one).
``skipped`` cases (e.g. read-only directories when running as root) are listed but not counted as bad.
The exit status is 0 only when no case is bad.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
VENV_PYTHON = VENV / "bin" / "python"


def _reexec_in_venv() -> None:
    """The server cases and the DROID fixture need the project's environment (numpy, msgpack, h5py)."""
    if Path(sys.prefix).resolve() == VENV.resolve() or not VENV_PYTHON.exists():
        return
    if os.environ.get("FUZZ_CLI_REEXEC"):
        return
    os.environ["FUZZ_CLI_REEXEC"] = "1"
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])


PY = str(VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable))
TRAIN = str(REPO / "train.py")
EVAL = str(REPO / "scripts" / "eval.py")
SERVE = str(REPO / "scripts" / "serve.py")
CONVERT = str(REPO / "scripts" / "convert_droid.py")
RLVR = str(REPO / "train_rlvr.py")
REPO_DATASET = REPO / "data" / "robosuite_lift_64px_3demos"

OUTCOMES = (
    "clear",
    "raw_traceback",
    "unnamed",
    "silent",
    "wrongly_refused",
    "hang",
    "file_lost",
    "partial_output",
    "fault_unmet",
    "skipped",
)
BAD = frozenset(OUTCOMES) - {"clear", "skipped"}
PROGRAMS = ("fixture", "train", "eval", "serve", "server", "convert", "rlvr", "fault")
SENTINEL = "the user's own notes: must survive every case\nline 2 \u2713 42\n".encode()
ARGPARSE_ERROR = re.compile(r"^[\w.\-]+: error: ")
HYDRA_MESSAGE = "HYDRA_FULL_ERROR"


# ------------------------------------------------------------------------------------------ records
@dataclass
class Spec:
    """How one command-line case runs, built in its fresh directory."""

    argv: list[str]
    tokens: tuple[str, ...] = ()
    cwd: Path | None = None
    watch_serving: bool = False  # serve.py refusing: "serving ..." on stdout means it accepted
    skip: str | None = None
    resources: list[Any] = field(default_factory=list)  # closed after the case (sockets held open)
    never_left: list[Path] = field(default_factory=list)  # outputs a refused command must not leave behind


@dataclass
class Result:
    name: str
    program: str
    expect: str
    outcome: str
    rc: int | None
    seconds: float
    command: str
    tail: list[str]
    details: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)


@dataclass
class Case:
    name: str
    expect: str  # refused | accepted
    build: Callable[[Ctx], Spec] | None = None
    runner: Callable[[Campaign, Case], list[Result]] | None = None  # faults, the server session
    needs: tuple[str, ...] = ()  # fixtures: "run", "droid" (the dataset is always made first)
    timeout: float | None = None
    server: list[ServerCase] | None = None

    @property
    def program(self) -> str:
        return self.name.split("/", 1)[0]


@dataclass
class ServerCase:
    name: str
    expect: str
    tokens: tuple[str, ...]
    message: Callable[[dict[str, Any]], bytes | str]  # metadata → what is sent
    description: str = ""


# ------------------------------------------------------------------------------------------- helpers
def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("/", "__"))[:120]


def tree_hashes(path: Path, exclude: frozenset[str] = frozenset()) -> dict[str, str]:
    """``{relative path: sha256}`` of every file at or below ``path`` (``exclude``: top-level names)."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()} if path.is_file() else {}
    if not path.is_dir():
        return {}
    hashes = {}
    for file in sorted(path.rglob("*")):
        relative = file.relative_to(path)
        if relative.parts[0] in exclude or not file.is_file():
            continue
        hashes[str(relative)] = hashlib.sha256(file.read_bytes()).hexdigest()
    return hashes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def merged(base: list[str], overrides: list[str]) -> list[str]:
    """``base`` without the keys ``overrides`` set, then ``overrides`` (the case's values win)."""
    keys = {override_key(o) for o in overrides}
    return [b for b in base if override_key(b) not in keys] + list(overrides)


def nonempty_lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def truncate(file: Path, fraction: float = 0.5) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * fraction)])


def edit_json(file: Path, edit: Callable[[Any], Any]) -> None:
    data = json.loads(file.read_text())
    edit(data)  # in place
    file.write_text(json.dumps(data, indent=4))


def group_members(pgid: int) -> list[str]:
    """The command lines of the processes in process group ``pgid`` (from /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                members.append(cmdline.strip()[:160])
        except (OSError, IndexError, ValueError):
            continue
    return members


class Proc:
    """A command in its own process group, its output read by threads as it comes."""

    live: ClassVar[set[Proc]] = set()  # killed if the campaign is interrupted
    live_lock = threading.Lock()

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.argv = argv
        self.started = time.monotonic()
        self.p = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(self.p.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.p.stderr, self.err), daemon=True),
        ]
        for reader in self.readers:
            reader.start()
        self.stragglers: list[str] = []  # what was left running in its group after it exited
        with Proc.live_lock:
            Proc.live.add(self)

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.p.pid, signum)

    def group_alive(self) -> bool:
        try:
            os.killpg(self.p.pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def wait(self, timeout: float, until: Callable[[], bool] | None = None) -> str:
        """``"exited"``, ``"until"`` (the condition came true first) or ``"timeout"``."""
        deadline = time.monotonic() + timeout
        while True:
            if self.p.poll() is not None:
                return "exited"
            if until is not None and until():
                return "until"
            if time.monotonic() > deadline:
                return "timeout"
            time.sleep(0.05)

    def finish(self) -> None:
        """After the process exits or is killed: note and end what it left in its group, drain output."""
        if self.p.poll() is None:
            self.signal_group(signal.SIGKILL)
            self.p.wait()
        deadline = time.monotonic() + 3.0  # children may still be exiting
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.group_alive():
            self.stragglers = group_members(self.p.pid) or ["?"]
            self.signal_group(signal.SIGKILL)
        for reader in self.readers:
            reader.join(timeout=10)
        with Proc.live_lock:
            Proc.live.discard(self)

    def kill(self) -> None:
        self.signal_group(signal.SIGKILL)
        self.finish()


# ----------------------------------------------------------------------------------------- contexts
class Fixtures:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dataset = root / "lift3"  # a complete recorded robosuite Lift dataset (3 demos)
        self.run = root / "run"  # one finished smoke run
        self.droid_raw = root / "droid_raw"  # 2 successful DROID episodes + 1 failure
        self.ready = {name: threading.Event() for name in ("dataset", "run", "droid")}
        self.failed: dict[str, str] = {}

    def wait(self, names: tuple[str, ...]) -> str | None:
        for name in ("dataset", *names):
            self.ready[name].wait()
            if name in self.failed:
                return f"fixture {name!r} failed: {self.failed[name]}"
        return None

    @property
    def droid_episodes(self) -> list[Path]:
        return sorted(p.parent for p in (self.droid_raw / "success").rglob("trajectory.h5"))


class Ctx:
    """One case's fresh directory: ``user/notes.txt`` (a user's directory) and ``work/`` (the cwd)."""

    def __init__(self, campaign: Campaign, name: str) -> None:
        self.campaign = campaign
        self.fx = campaign.fixtures
        self.dir = campaign.workdir / "cases" / slug(name)
        if self.dir.exists():
            subprocess.run(["chmod", "-R", "u+rwX", str(self.dir)], check=False)
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.work = self.dir / "work"
        self.work.mkdir()
        self.sentinels: list[Path] = []
        self.snapshots: dict[Path, dict[str, str]] = {}
        self.snapshot_excludes: dict[Path, frozenset[str]] = {}
        self.user_dir = self.user(self.dir / "user")

    def user(self, path: Path, name: str = "notes.txt") -> Path:
        """A user's directory at ``path`` holding ``name`` with known content (checked after the case)."""
        path.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(SENTINEL)
        self.sentinels.append(path / name)
        return path

    def protect(self, path: Path, exclude: frozenset[str] = frozenset()) -> None:
        """Every file at or below ``path`` must be there, unchanged, after the case."""
        self.snapshots[path] = tree_hashes(path, exclude)
        self.snapshot_excludes[path] = exclude

    def copy_run(self, dest: Path | None = None) -> Path:
        dest = dest or self.dir / "run"
        shutil.copytree(self.fx.run, dest, ignore=shutil.ignore_patterns("eval"))
        return dest

    def copy_dataset(self, dest: Path | None = None) -> Path:
        dest = dest or self.dir / "dataset"
        shutil.copytree(self.fx.dataset, dest)
        return dest

    def copy_raw(self, episodes: int = 1, failure: bool = False) -> tuple[Path, list[Path]]:
        """A raw DROID root holding copies of the first ``episodes`` successful episodes."""
        raw = self.dir / "raw"
        copies = []
        for episode in self.fx.droid_episodes[:episodes]:
            target = raw / episode.relative_to(self.fx.droid_raw)
            shutil.copytree(episode, target)
            copies.append(target)
        if failure:
            for episode in sorted(p.parent for p in (self.fx.droid_raw / "failure").rglob("trajectory.h5")):
                shutil.copytree(episode, raw / episode.relative_to(self.fx.droid_raw))
        return raw, copies

    def verify(self) -> list[str]:
        problems = []
        for file in self.sentinels:
            if not file.is_file():
                problems.append(f"lost: {file} is gone")
            elif file.read_bytes() != SENTINEL:
                problems.append(f"lost: {file} was changed")
        for path, before in self.snapshots.items():
            after = tree_hashes(path, self.snapshot_excludes[path])
            missing = [k for k in before if k not in after]
            changed = [k for k in before if k in after and after[k] != before[k]]
            if missing:
                problems.append(f"lost: {len(missing)} file(s) under {path} are gone, e.g. {missing[:3]}")
            if changed:
                problems.append(f"lost: {len(changed)} file(s) under {path} were changed, e.g. {changed[:3]}")
        return problems


def error_line(stderr: str) -> str:
    lines = nonempty_lines(stderr)
    return lines[-1].strip() if lines else ""


def is_error_line(line: str) -> bool:
    return line.startswith("error:") or bool(ARGPARSE_ERROR.match(line))


def classify(
    expect: str, rc: int | None, stdout: str, stderr: str, tokens: tuple[str, ...], timed_out: bool
) -> tuple[str, list[str]]:
    """(outcome, details) of one command-line run, before the file check."""
    details = []
    last = error_line(stderr)
    if timed_out:
        return "hang", ["timed out: the process group was killed"]
    if "Traceback" in stdout or "Traceback" in stderr:
        return "raw_traceback", ["'Traceback' in the output"]
    if expect == "accepted":
        return ("clear", details) if rc == 0 else ("wrongly_refused", [f"exit {rc}"])
    if rc == 0:
        return "silent", ["exit 0"]
    if not is_error_line(last):
        lines = nonempty_lines(stderr)
        earlier = [i for i, line in enumerate(lines) if line.startswith("error:")]
        if HYDRA_MESSAGE in stderr and not earlier:
            why = "Hydra's own message, no `error:` line"
        elif earlier:
            above = len(lines) - earlier[-1] - 1
            why = f"multi-line error: its `error:` line is {above} line(s) above the last"
        else:
            why = "no `error:` last line"
        return "raw_traceback", [why]
    if ARGPARSE_ERROR.match(last):
        details.append("argparse usage error line")
    if tokens and not any(token in last for token in tokens):
        return "unnamed", [*details, f"error line lacks {list(tokens)}"]
    return "clear", details


def tail_of(stdout: str, stderr: str, n: int = 3) -> list[str]:
    lines = nonempty_lines(stderr) or nonempty_lines(stdout)
    return [line[:600] for line in lines[-n:]]


# ------------------------------------------------------------------------------------------ campaign
def harness_error(case: Any, what: str, error: Exception) -> Result:
    """A case this script itself failed to run: reported as skipped, with the error, never hidden."""
    details = [f"{what}: {error!r}", traceback.format_exc()[-800:]]
    return Result(case.name, case.program, case.expect, "skipped", None, 0.0, "", [], details)


class Campaign:
    def __init__(self, args: argparse.Namespace, cases: list[Case]) -> None:
        self.args = args
        self.cases = cases
        self.workdir = Path(args.workdir).resolve()
        self.fixtures = Fixtures(self.workdir / "fixtures")
        self.results: list[Result] = []
        self.dataset_snapshot: dict[str, str] | None = None  # the shared dataset, checked at the end
        self.lock = threading.Lock()
        self.total = sum(len(c.server) if c.server else 1 for c in cases)
        self.done = 0
        self.env = dict(os.environ)
        for variable in ("VLA_TRAIN_TRACEBACK", "HYDRA_FULL_ERROR", "FUZZ_CLI_REEXEC"):
            self.env.pop(variable, None)
        self.env.update(
            VLA_TRAIN_CACHE=str(self.workdir / "cache"),
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
        )

    # --- bookkeeping -----------------------------------------------------------------------------
    def record(self, results: list[Result]) -> None:
        with self.lock:
            for result in results:
                self.results.append(result)
                self.done += 1
                flag = "  " if result.outcome in ("clear", "skipped") else "!!"
                print(
                    f"{flag} [{self.done:3d}/{self.total}] {result.outcome:15s} {result.name} "
                    f"({result.seconds:.0f} s)",
                    flush=True,
                )

    def timeout(self, case: Case) -> float:
        return min(case.timeout, self.args.timeout) if case.timeout else self.args.timeout

    # --- one command-line case -------------------------------------------------------------------
    def run_case(self, case: Case) -> list[Result]:
        if case.server is not None:
            return self.run_server_session(case)
        blocked = self.fixtures.wait(case.needs)
        if blocked:
            return [Result(case.name, case.program, case.expect, "skipped", None, 0.0, "", [], [blocked])]
        if case.runner is not None:
            try:
                return case.runner(self, case)
            except Exception as error:  # a bug of this script: report it, never hide the case
                return [harness_error(case, "harness error", error)]
        started = time.monotonic()
        try:
            ctx = Ctx(self, case.name)
            spec = case.build(ctx)
        except Exception as error:
            return [harness_error(case, "harness error while preparing", error)]
        command = shlex.join(spec.argv)
        if spec.skip:
            return [
                Result(case.name, case.program, case.expect, "skipped", None, 0.0, command, [], [spec.skip])
            ]
        proc = Proc(spec.argv, spec.cwd or ctx.work, self.env)
        served = lambda: spec.watch_serving and any("serving " in line for line in proc.out)  # noqa: E731
        state = proc.wait(self.timeout(case), until=served if spec.watch_serving else None)
        if state == "until" and proc.wait(15) == "exited":  # "serving" comes before the bind
            state = "exited"
        proc.finish()
        for resource in spec.resources:
            resource.close()
        rc = proc.p.returncode
        stdout, stderr = proc.stdout, proc.stderr
        (ctx.dir / "stdout.txt").write_text(stdout)
        (ctx.dir / "stderr.txt").write_text(stderr)
        if state == "until":  # serve.py started serving with a value it should have refused
            outcome, details = (
                ("silent", ["serve.py started serving"]) if case.expect == "refused" else ("clear", [])
            )
            rc = None
        else:
            outcome, details = classify(case.expect, rc, stdout, stderr, spec.tokens, state == "timeout")
        lost = ctx.verify()
        if lost:
            details = [f"outcome before the file check: {outcome}", *details, *lost]
            outcome = "file_lost"
        left = [str(path) for path in spec.never_left if path.exists()] if rc else []
        if left and outcome == "clear":  # a half-written dataset a later command would read as whole
            outcome, details = "partial_output", [*details, f"a refused command left {left}"]
        if proc.stragglers:
            details.append(
                f"processes of its group still ran 3 s after it exited (killed): {proc.stragglers}"
            )
        return [
            Result(
                case.name,
                case.program,
                case.expect,
                outcome,
                rc,
                time.monotonic() - started,
                command,
                tail_of(stdout, stderr),
                details,
                list(spec.tokens),
            )
        ]

    # --- the server session ----------------------------------------------------------------------
    def run_server_session(self, case: Case) -> list[Result]:
        assert case.server is not None
        blocked = self.fixtures.wait(case.needs)
        if blocked:
            return [
                Result(c.name, "server", c.expect, "skipped", None, 0.0, "", [], [blocked])
                for c in case.server
            ]
        import numpy as np
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        from vla_train.serving.client import RemotePolicy
        from vla_train.serving.wire import unpack

        ctx = Ctx(self, "server/session")
        results: list[Result] = []
        server: dict[str, Any] = {}

        def start() -> str | None:
            port = free_port()
            argv = [PY, SERVE, str(self.fixtures.run), "--port", str(port)]
            proc = Proc(argv, ctx.work, self.env)
            state = proc.wait(180, until=lambda: any("serving " in line for line in proc.out))
            if state != "until":
                proc.finish()
                return f"serve.py did not start ({state}): {tail_of(proc.stdout, proc.stderr)}"
            uri = f"ws://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    with RemotePolicy(uri, timeout=10) as remote:
                        server.update(proc=proc, uri=uri, argv=argv, metadata=remote.metadata)
                    return None
                except Exception as error:
                    if time.monotonic() > deadline or proc.p.poll() is not None:
                        proc.kill()
                        return f"serve.py printed 'serving' but did not answer: {error!r}"
                    time.sleep(0.5)

        def good_inputs(metadata: dict[str, Any]) -> list[dict[str, Any]]:
            size, cameras = int(metadata["image_size"]), len(metadata["cameras"])
            return [
                {
                    "images": np.full((cameras, 3, size, size), 0.5, np.float32),
                    "state": np.zeros(int(metadata["state_dim"]), np.float32),
                    "instruction": "lift the red cube",
                }
            ]

        def answers_good_request() -> str | None:
            try:
                with RemotePolicy(server["uri"], timeout=30) as remote:
                    actions = remote(good_inputs(remote.metadata))
                if not np.isfinite(actions).all():
                    return "a good request got non-finite actions"
                return None
            except Exception as error:
                return f"a good request afterwards failed: {type(error).__name__}: {error}"

        problem = start()
        if problem:
            return [
                Result(c.name, "server", c.expect, "skipped", None, 0.0, "", [], [problem])
                for c in case.server
            ]
        for request in case.server:
            started = time.monotonic()
            proc: Proc = server["proc"]
            err_start = len(proc.err)
            command = f"{shlex.join(server['argv'])}  # then send: {request.description or request.name}"
            details: list[str] = []
            reply: Any = None
            error_text = None
            got = "nothing"
            try:
                message = request.message(server["metadata"])
                with connect(server["uri"], max_size=256 * 2**20, open_timeout=10) as ws:
                    unpack(ws.recv(timeout=10))  # metadata
                    ws.send(message)
                    raw = ws.recv(timeout=30)
                if isinstance(raw, str):  # openpi's way: the error as a text frame
                    got, error_text = "error", raw
                else:
                    reply = unpack(raw)
                    if isinstance(reply, dict) and "error" in reply:
                        got, error_text = "error", str(reply["error"])
                    elif isinstance(reply, dict) and "actions" in reply:
                        got = "actions"
                        if not np.isfinite(np.asarray(reply["actions"], dtype=np.float64)).all():
                            details.append("the actions sent back are not finite")
                    else:
                        got, error_text = "other", repr(reply)[:300]
            except TimeoutError:
                got = "timeout"
            except ConnectionClosed as closed:
                got = "closed"
                details.append(f"connection closed without a reply: {closed}")
            except Exception as error:
                got = "client_error"
                details.append(f"{type(error).__name__}: {error}")
            alive = proc.p.poll() is None
            after = answers_good_request() if alive else "the server process exited"
            time.sleep(0.3)
            new_err = "".join(proc.err[err_start:])
            if not alive or proc.p.poll() is not None:
                outcome = "raw_traceback" if "Traceback" in proc.stderr else "hang"
                details.append(f"the server died (exit {proc.p.returncode})")
            elif got in ("timeout", "closed", "client_error") and request.expect == "refused":
                outcome = "hang" if got == "timeout" else "unnamed"
                details.append(f"no error reply ({got})")
            elif after:
                outcome = "hang"
                details.append(after)
            elif "Traceback" in new_err:
                outcome = "raw_traceback"
                details.append("the server printed a Traceback")
            elif request.expect == "accepted":
                outcome = "clear" if got == "actions" and not details else "wrongly_refused"
            elif got == "actions":
                outcome = "silent"
                details.append("actions were sent back")
            elif (
                error_text is not None and request.tokens and not any(t in error_text for t in request.tokens)
            ):
                outcome = "unnamed"
                details.append(f"error reply lacks {list(request.tokens)}")
            else:
                outcome = "clear"
            tail = [f"reply: {got}: {error_text[:500]}" if error_text else f"reply: {got}"]
            tail += [line[:300] for line in nonempty_lines(new_err)[-2:]]
            if not alive or proc.p.poll() is not None:  # restart for the next request
                proc.finish()
                restart_problem = start()
                if restart_problem:
                    details.append(f"restart failed: {restart_problem}")
            result = Result(
                request.name,
                "server",
                request.expect,
                outcome,
                None,
                time.monotonic() - started,
                command,
                tail,
                details,
                list(request.tokens),
            )
            results.append(result)
            self.record([result])
        server["proc"].signal_group(signal.SIGTERM)
        if server["proc"].wait(20) == "timeout":
            server["proc"].kill()
        server["proc"].finish()
        (ctx.dir / "server_stdout.txt").write_text(server["proc"].stdout)
        (ctx.dir / "server_stderr.txt").write_text(server["proc"].stderr)
        return []  # recorded one by one

    # --- fixtures --------------------------------------------------------------------------------
    def make_dataset(self) -> None:
        fx = self.fixtures
        fx.root.mkdir(parents=True, exist_ok=True)
        if (fx.dataset / ".complete").is_file() and self.args.reuse_fixtures:
            fx.ready["dataset"].set()
            return
        shutil.rmtree(fx.dataset, ignore_errors=True)
        if (REPO_DATASET / ".complete").is_file():
            shutil.copytree(REPO_DATASET, fx.dataset)
        # otherwise the fixture run records it (train.py generates a missing dataset at its root)
        fx.ready["dataset"].set()
        if (fx.dataset / ".complete").is_file():
            self.dataset_snapshot = tree_hashes(fx.dataset)

    def make_run(self) -> list[Result]:
        fx = self.fixtures
        started = time.monotonic()
        if (
            self.args.reuse_fixtures
            and (fx.run / "checkpoints").is_dir()
            and (fx.run / "fixture.ok").is_file()
        ):
            fx.ready["run"].set()
            return []
        shutil.rmtree(fx.run, ignore_errors=True)
        argv = [
            PY,
            TRAIN,
            "experiment=smoke",
            "logger=none",
            "evaluate=false",
            f"env.dataset.root={fx.dataset}",
            f"hydra.run.dir={fx.run}",
        ]
        proc = Proc(argv, fx.root, self.env)
        state = proc.wait(max(self.args.timeout, 900))
        proc.finish()
        rc = proc.p.returncode
        outcome, details = classify("accepted", rc, proc.stdout, proc.stderr, (), state == "timeout")
        (fx.root / "run_stdout.txt").write_text(proc.stdout)
        (fx.root / "run_stderr.txt").write_text(proc.stderr)
        if outcome == "clear" and (fx.dataset / ".complete").is_file():
            (fx.run / "fixture.ok").touch()
            if self.dataset_snapshot is None:
                self.dataset_snapshot = tree_hashes(fx.dataset)
        else:
            fx.failed["run"] = f"{outcome}: {tail_of(proc.stdout, proc.stderr)}"
            fx.failed.setdefault("dataset", fx.failed["run"])
        fx.ready["run"].set()
        return [
            Result(
                "fixture/smoke_run",
                "fixture",
                "accepted",
                outcome,
                rc,
                time.monotonic() - started,
                shlex.join(argv),
                tail_of(proc.stdout, proc.stderr),
                details,
            )
        ]

    def make_droid(self) -> list[Result]:
        fx = self.fixtures
        started = time.monotonic()
        try:
            if not (self.args.reuse_fixtures and (fx.droid_raw / "fixture.ok").is_file()):
                shutil.rmtree(fx.droid_raw, ignore_errors=True)
                sys.path.insert(0, str(REPO / "tests"))
                from droid_data import write_raw_episode

                for index in range(2):
                    write_raw_episode(
                        fx.droid_raw,
                        f"Wed_Nov_25_10:00:0{index}_2026",
                        6,
                        "put the cube on the plate",
                        True,
                        index,
                    )
                write_raw_episode(fx.droid_raw, "Wed_Nov_25_11:00:00_2026", 4, "knock the cup over", False, 9)
                (fx.droid_raw / "fixture.ok").touch()
            outcome, details = "clear", []
        except Exception as error:
            fx.failed["droid"] = repr(error)
            outcome, details = "skipped", [f"could not write DROID recordings: {error!r}"]
        fx.ready["droid"].set()
        return [
            Result(
                "fixture/droid_recordings",
                "fixture",
                "accepted",
                outcome,
                None,
                time.monotonic() - started,
                "tests/droid_data.write_raw_episode x3",
                [],
                details,
            )
        ]

    # --- everything ------------------------------------------------------------------------------
    def run(self) -> None:
        fx = self.fixtures
        needs = {need for case in self.cases for need in case.needs}
        self.make_dataset()
        jobs: list[Callable[[], list[Result]]] = []
        if "run" in needs or not (fx.dataset / ".complete").is_file():
            jobs.append(self.make_run)
        else:
            fx.ready["run"].set()
        if "droid" in needs:
            jobs.append(self.make_droid)
        else:
            fx.ready["droid"].set()
        self.total += len(jobs)
        # the dataset must be complete before any training case reads it
        if not (fx.dataset / ".complete").is_file():
            self.record(self.make_run())
            jobs = [j for j in jobs if j != self.make_run]
        # long cases first, then those without fixtures, then those waiting for the run
        order = sorted(
            self.cases,
            key=lambda c: (
                0 if c.program == "fault" else 2 if "run" in c.needs or c.server is not None else 1,
                0 if c.program == "fault" else 1,
            ),
        )
        jobs += [lambda case=case: self.run_case(case) for case in order]
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.args.jobs) as pool:
            futures = [pool.submit(job) for job in jobs]
            try:
                for future in concurrent.futures.as_completed(futures):
                    results = future.result()
                    if results:
                        self.record(results)
            except KeyboardInterrupt:
                print("\ninterrupted: killing the running cases", flush=True)
                for future in futures:
                    future.cancel()
                with Proc.live_lock:
                    running = list(Proc.live)
                for proc in running:
                    proc.signal_group(signal.SIGKILL)
                raise


# ============================================================================================ cases
def train_base(ctx: Ctx, run_dir: Path | None = None) -> list[str]:
    """A fast valid training command: the smoke experiment, 2 steps of batch 2, the shared dataset."""
    return [
        "experiment=smoke",
        "logger=none",
        "evaluate=false",
        f"env.dataset.root={ctx.fx.dataset}",
        f"hydra.run.dir={run_dir or ctx.dir / 'run'}",
        "trainer.steps=2",
        "trainer.batch_size=2",
        "trainer.checkpoint_every=0",
        "trainer.diagnostics_every=0",
        "trainer.log_every=1",
    ]


def resume_base(ctx: Ctx, run_dir: Path) -> list[str]:
    """The fixture run's own command (its config must match), pointed at a copy of it."""
    return [
        "experiment=smoke",
        "logger=none",
        "evaluate=false",
        f"env.dataset.root={ctx.fx.dataset}",
        f"hydra.run.dir={run_dir}",
    ]


def T(
    name: str,
    overrides: list[str],
    tokens: tuple[str, ...] | str,
    expect: str = "refused",
    timeout: float | None = None,
) -> Case:
    """A train.py case: the fast base command with ``overrides`` (which win)."""
    tokens = (tokens,) if isinstance(tokens, str) else tokens

    def build(ctx: Ctx) -> Spec:
        return Spec([PY, TRAIN, *merged(train_base(ctx), overrides)], tokens)

    return Case(f"train/{name}", expect, build, timeout=timeout)


def train_cases(as_root: bool) -> list[Case]:
    cases: list[Case] = []
    # --- optimizer: values of our own (range, type, negative zero, null, lists, unicode, empty)
    for value in (
        "-0.0",
        "1e-400",
        "inf",
        "nan",
        "null",
        "''",
    ):
        cases.append(T(f"optimizer.lr={value}", [f"optimizer.lr={value}"], "optimizer.lr"))
    cases.append(
        T("optimizer.lr=1e30", ["optimizer.lr=1e30", "trainer.steps=20"], "optimizer.lr", timeout=200)
    )
    for key, values in {
        "optimizer.aux_lr_ratio": ["nan"],
        "optimizer.lr_scale_factor": ["-inf"],
        "optimizer.weight_decay": ["nan"],
        "optimizer.momentum": ["1.0000001"],
        "optimizer.adamw_eps": ["-inf"],
        "optimizer.betas": ["[1,0.5]", "[]", "{b1:0.9}"],
        "optimizer.kp": ["99999999999999999999999"],
        "optimizer.ns_steps": ["null"],
        "optimizer.rank": ["[16]"],
        "optimizer.tau": ["nan"],
        "optimizer.vision": ["'\u043cuon'"],  # a Cyrillic m, quoted
        "optimizer.action": ["PION"],
        "optimizer.language": ["' muon'"],
        "optimizer.lr_scale": ["spectral2"],
        "optimizer.compute_dtype": [
            "'\uff46\uff4c\uff4f\uff41\uff54\uff13\uff12'"
        ],  # fullwidth float32, quoted
        "optimizer.per_head_modalities": ["vision"],
        "optimizer.nesterov": ["2"],
    }.items():
        for value in values:
            cases.append(T(f"{key}={value}", [f"{key}={value}"], key))
    # --- trainer
    for key, values in {
        "trainer.steps": ["-2147483649", "2.5", "true", "null", "[1,2]"],
        "trainer.batch_size": ["-3"],
        "trainer.gradient_accumulation_steps": ["0.5"],
        "trainer.milestones": ["7", "[-5]"],
        "trainer.warmup_steps": ["-10"],
        "trainer.eval_every": ["-1"],
        "trainer.gamma": ["-0.0"],
        "trainer.min_lr_ratio": ["nan"],
        "trainer.max_grad_norm": ["nan"],
        "trainer.num_workers": ["-2"],
        "trainer.checkpoint_every": ["-7"],
        "trainer.diagnostics_every": ["-2"],
        "trainer.stop_at_step": ["0"],
        "trainer.max_nonfinite_steps": ["-1"],
        "trainer.progress_interval_s": ["-0.0"],
        "trainer.schedule": ["cos\u00edne", "null"],
        "trainer.mixed_precision": ["fp16"],
        "trainer.strategy": ["zero3"],
        "trainer.weight_dtype": ["float64"],
        "trainer.cpu": ["'s\u00ed'"],
        "trainer.seed": ["-1", "99999999999999999999"],
        "trainer.resume": ["[true]"],
    }.items():
        for value in values:
            cases.append(T(f"{key}={value}", [f"{key}={value}"], key))
    cases += [
        T(
            "trainer.decay_steps=0 schedule=cosine",
            ["trainer.schedule=cosine", "trainer.decay_steps=0"],
            "trainer.decay_steps",
        ),
        T("trainer.decay_steps=5 schedule=constant", ["trainer.decay_steps=5"], "trainer.decay_steps"),
        T(
            "trainer.weight_dtype=bfloat16 mixed_precision=no",
            ["trainer.weight_dtype=bfloat16", "trainer.mixed_precision=no"],
            "trainer.mixed_precision",
        ),
        T(
            "trainer.strategy=fsdp eval_every=1",
            ["trainer.strategy=fsdp", "trainer.eval_every=1"],
            "trainer.eval_every",
        ),
        T("trainer.resume=true in a new directory", ["trainer.resume=true"], "trainer.resume"),
        T("logger.mode=verbose", ["logger.mode=verbose"], "logger.mode"),
        T("logger.tags=notalist", ["logger.tags=notalist"], "logger.tags"),
        T("evaluate=2", ["evaluate=2"], "evaluate"),
        T("run_name=null", ["run_name=null"], "run_name"),
        # huge ints where nothing bounds them from above: refused, or they run (and are timed out)
        T("trainer.steps=2**64", ["trainer.steps=18446744073709551616"], "trainer.steps", timeout=60),
        T(
            "optimizer.ns_steps=2**64",
            ["optimizer.ns_steps=18446744073709551616"],
            "optimizer.ns_steps",
            timeout=60,
        ),
        T("env.fps=1e30 as int", ["env.fps=1000000000000000000000000000000"], "env.fps"),
    ]
    # --- env, env.eval, env.dataset
    for key, values in {
        "env.image_size": ["63"],
        "env.chunk_size": ["3"],
        "env.n_action_steps": ["100"],
        "env.state_history": ["-1"],
        "env.fps": ["0.5", "30", "0"],
        "env.state_dim": ["7"],
        "env.action_dim": ["6"],
        "env.name": ["null"],
        "env.adapter": ["envs.robosuite.lift.NoSuchAdapter"],
        "env.cameras": ["[agentview,'\u30ed\u30dc\u30c3\u30c8']", "[]", "agentview"],
        "env.instruction": ["[lift]"],
        "env.state_normalization": ["minmax"],
        "env.action_normalization": ["Quantile"],
        "env.action_padding": ["zeros"],
        "env.simulator.max_demo_steps": ["abc"],
        "env.simulator.task": ["Lfit"],
        "env.simulator.robot": ["panda"],
        "env.simulator.controller": ["OSC"],
        "env.eval.episodes": ["-5", "1.5"],
        "env.eval.max_steps": ["-1"],
        "env.eval.videos": ["-2"],
        "env.eval.num_workers": ["0", "-1", "null"],
        "env.eval.tasks": ["[a]"],
        "env.dataset.num_demos": ["-1"],
        "env.dataset.episodes": ["[99]", "[-1]", "[]"],
        "env.dataset.root": ["[a,b]", "''"],
        "env.dataset.cache_in_memory": ["abc"],
    }.items():
        for value in values:
            cases.append(T(f"{key}={value}", [f"{key}={value}"], key))
    cases.append(
        T(
            "env.dataset.root=<missing dir> generate=false",
            ["env.dataset.root=/nonexistent/fuzz_cli/dataset", "env.dataset.generate=false"],
            "env.dataset.root",
        )
    )
    cases.append(
        T(
            "env.eval.episodes=0 with evaluate=true",
            ["evaluate=true", "env.eval.episodes=0"],
            "env.eval.episodes",
        )
    )
    # --- backbone, head
    for key, values in {
        "backbone.patch_size": ["5", "null"],
        "backbone.vision_heads": ["0"],
        "backbone.language_layers": ["-1"],
        "head.heads": ["0", "7"],
        "head.num_queries": ["-1"],
        "head.input_noise_std": ["nan"],
    }.items():
        for value in values:
            cases.append(T(f"{key}={value}", [f"{key}={value}"], key))
    cases += [
        T(
            "head=flow_tiny head.num_inference_steps=-1",
            ["head=flow_tiny", "head.num_inference_steps=-1"],
            "head.num_inference_steps",
        ),
        T(
            "head=flow_tiny head.time_sampling=uniform2",
            ["head=flow_tiny", "head.time_sampling=uniform2"],
            "head.time_sampling",
        ),
        T("head=flow_tiny head.heads=3", ["head=flow_tiny", "head.heads=3"], "head.heads"),
        T("backbone=pi05_tiny with head=l1", ["backbone=pi05_tiny"], ("head=pi05", "backbone")),
        T("head=pi05_tiny with backbone=tiny", ["head=pi05_tiny"], ("backbone=pi05", "head")),
        T(
            "backbone=prismatic_tiny backbone.checkpoint=/nope",
            ["backbone=prismatic_tiny", "head=l1_bridge", "backbone.checkpoint=/nope"],
            ("backbone.checkpoint", "/nope"),
        ),
    ]
    # --- unknown keys
    for override, token in [
        ("+trainer.learning_rate=1e-4", "trainer.learning_rate"),
        ("optimizer.learning_rate=1e-4", "learning_rate"),
        ("+env.eval.episode=3", "env.eval.episode"),
        ("+backbone.widht=1", "backbone.widht"),
        ("+env.simulator.gravity=0", "env.simulator.gravity"),
        ("++trainer.foo=1", "trainer.foo"),
        ("~trainer.steps", "trainer.steps"),
        ("+'\u00fcber'=1", "\u00fcber"),
    ]:
        cases.append(T(f"unknown {override}", [override], token))
    # --- misspelled group options
    for override, token in [
        ("experiment=smok", "smok"),
        ("head=l2", "l2"),
        ("env=libero_objet", "libero_objet"),
        ("optimizer=pion2", "pion2"),
        ("backbone=tinny", "tinny"),
        ("trainer=tiny2", "tiny2"),
        ("ablation=S0", "S0"),
    ]:
        cases.append(T(f"group {override}", [override], token))

    # --- where outputs go
    def user_run_dir(ctx: Ctx) -> Spec:
        target = ctx.user(ctx.dir / "my_project")
        (target / "results.csv").write_text("a,b\n1,2\n")
        ctx.protect(target)
        return Spec([PY, TRAIN, *merged(train_base(ctx), [f"hydra.run.dir={target}"])], (str(target),))

    def file_run_dir(ctx: Ctx) -> Spec:
        target = ctx.user_dir / "notes.txt"
        return Spec([PY, TRAIN, *merged(train_base(ctx), [f"hydra.run.dir={target}"])], (str(target),))

    def under_file_run_dir(ctx: Ctx) -> Spec:
        target = ctx.user_dir / "notes.txt" / "run"
        return Spec(
            [PY, TRAIN, *merged(train_base(ctx), [f"hydra.run.dir={target}"])], (str(target), "notes.txt")
        )

    def hidden_file_run_dir(ctx: Ctx) -> Spec:
        target = ctx.user(ctx.dir / "dotfiles", name=".bashrc")
        return Spec([PY, TRAIN, *merged(train_base(ctx), [f"hydra.run.dir={target}"])], (str(target),))

    def dataset_as_run_dir(ctx: Ctx) -> Spec:
        data = ctx.copy_dataset()
        ctx.protect(data)
        return Spec([PY, TRAIN, *merged(train_base(ctx), [f"hydra.run.dir={data}"])], (str(data),))

    def read_only_parent(ctx: Ctx) -> Spec:
        parent = ctx.dir / "readonly"
        parent.mkdir()
        spec = Spec(
            [PY, TRAIN, *merged(train_base(ctx), [f"hydra.run.dir={parent / 'run'}"])], (str(parent),)
        )
        os.chmod(parent, 0o555)
        if as_root:
            spec.skip = "running as root: chmod 555 does not stop root from writing"
        return spec

    def empty_run_dir(ctx: Ctx) -> Spec:
        target = ctx.dir / "empty"
        target.mkdir()
        return Spec([PY, TRAIN, *merged(train_base(ctx), [f"hydra.run.dir={target}"])], ())

    def traversal_run_name(ctx: Ctx) -> Spec:
        cwd = ctx.work / "deep"
        cwd.mkdir()
        target = ctx.user(ctx.work / "x")  # outputs/../../x from work/deep
        base = [o for o in train_base(ctx) if not o.startswith("hydra.run.dir=")]
        return Spec([PY, TRAIN, *base, "run_name=../../x"], (str(target), "x"), cwd=cwd)

    def empty_run_dir_value(ctx: Ctx) -> Spec:
        ctx.user(ctx.work)  # the cwd holds the user's file
        return Spec(
            [PY, TRAIN, *merged(train_base(ctx), ["hydra.run.dir=''"])], ("output_dir", "hydra.run.dir")
        )

    def other_run_without_resume(ctx: Ctx) -> Spec:
        run = ctx.copy_run()
        ctx.protect(run, frozenset({".hydra", "train.log"}))
        return Spec([PY, TRAIN, *resume_base(ctx, run), "trainer.resume=false"], ("trainer.resume", str(run)))

    def rerun_after_failed_validation(ctx: Ctx) -> Spec:
        target = ctx.dir / "run"
        first = subprocess.run(
            [PY, TRAIN, *merged(train_base(ctx), ["trainer.steps=0"])],
            cwd=ctx.work,
            env=ctx.campaign.env,
            capture_output=True,
            timeout=240,
        )
        assert first.returncode != 0 and target.exists(), "the failed first run left no directory"
        return Spec([PY, TRAIN, *train_base(ctx)], ())

    cases += [
        Case("train/hydra.run.dir=user dir with files", "refused", user_run_dir),
        Case("train/hydra.run.dir=existing regular file", "refused", file_run_dir),
        Case("train/hydra.run.dir=below a regular file", "refused", under_file_run_dir),
        Case("train/hydra.run.dir=user dir with only a dotfile", "refused", hidden_file_run_dir),
        Case("train/hydra.run.dir=a dataset directory", "refused", dataset_as_run_dir),
        Case(
            "train/hydra.run.dir=/dev/null",
            "refused",
            lambda ctx: Spec(
                [PY, TRAIN, *merged(train_base(ctx), ["hydra.run.dir=/dev/null"])], ("/dev/null",)
            ),
        ),
        Case("train/hydra.run.dir='' (cwd with user files)", "refused", empty_run_dir_value),
        Case("train/run_name=../../x into a user dir", "refused", traversal_run_name),
        Case("train/hydra.run.dir under a read-only dir", "refused", read_only_parent),
        Case(
            "train/hydra.run.dir=another run without resume",
            "refused",
            other_run_without_resume,
            needs=("run",),
        ),
        Case("train/accepted hydra.run.dir=existing empty dir", "accepted", empty_run_dir),
        Case(
            "train/accepted rerun in a dir a failed validation left",
            "accepted",
            rerun_after_failed_validation,
        ),
    ]
    # --- accepted variations (catch over-eager checks)
    for name, overrides in [
        ("base command", []),
        ("optimizer.lr=0.001", ["optimizer.lr=0.001"]),
        ("optimizer=adamw", ["optimizer=adamw"]),
        ("head=flow_tiny", ["head=flow_tiny"]),
        ("schedule=cosine warmup_steps=1", ["trainer.schedule=cosine", "trainer.warmup_steps=1"]),
        ("optimizer.weight_decay=-0.0", ["optimizer.weight_decay=-0.0"]),
        ("env.dataset.episodes=[0,2]", ["env.dataset.episodes=[0,2]"]),
        ("unicode run_name (quoted)", ["run_name='\u00fcbung-\u30c6\u30b9\u30c8'"]),
    ]:
        cases.append(T(f"accepted {name}", overrides, (), expect="accepted"))
    cases += dataset_cases() + resume_cases()
    return cases


def dataset_cases() -> list[Case]:
    """env.dataset.root at a user's directory, a file, or a corrupted copy of the recorded dataset."""
    cases = []

    def user_root(generate: bool) -> Callable[[Ctx], Spec]:
        def build(ctx: Ctx) -> Spec:
            target = ctx.user(ctx.dir / "my_data")
            (target / "photo.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
            ctx.protect(target)
            overrides = [f"env.dataset.root={target}", f"env.dataset.generate={str(generate).lower()}"]
            return Spec([PY, TRAIN, *merged(train_base(ctx), overrides)], ("env.dataset.root",))

        return build

    def file_root(ctx: Ctx) -> Spec:
        target = ctx.user_dir / "notes.txt"
        return Spec(
            [PY, TRAIN, *merged(train_base(ctx), [f"env.dataset.root={target}"])], ("env.dataset.root",)
        )

    def empty_root(ctx: Ctx) -> Spec:
        target = ctx.dir / "empty"
        target.mkdir()
        overrides = [f"env.dataset.root={target}", "env.dataset.generate=false"]
        return Spec([PY, TRAIN, *merged(train_base(ctx), overrides)], ("env.dataset.root",))

    def run_as_root(ctx: Ctx) -> Spec:
        run = ctx.copy_run(ctx.dir / "other_run")
        ctx.protect(run)
        return Spec([PY, TRAIN, *merged(train_base(ctx), [f"env.dataset.root={run}"])], ("env.dataset.root",))

    cases += [
        Case("train/env.dataset.root=user dir (generate=true)", "refused", user_root(True)),
        Case("train/env.dataset.root=user dir (generate=false)", "refused", user_root(False)),
        Case("train/env.dataset.root=a regular file", "refused", file_root),
        Case("train/env.dataset.root=empty dir (generate=false)", "refused", empty_root),
        Case("train/env.dataset.root=a run directory", "refused", run_as_root, needs=("run",)),
    ]

    def corrupt(name: str, mutate: Callable[[Path], str], extra: list[str] | None = None) -> Case:
        """A corrupted copy of the dataset: refused naming the file (or the root), the copy untouched."""

        def build(ctx: Ctx) -> Spec:
            data = ctx.copy_dataset()
            file_token = mutate(data)
            ctx.protect(data)
            overrides = [f"env.dataset.root={data}", *(extra or [])]
            tokens = tuple(t for t in (file_token, str(data), "env.dataset.root") if t)
            return Spec([PY, TRAIN, *merged(train_base(ctx), overrides)], tokens)

        return Case(f"train/corrupted dataset: {name}", "refused", build)

    data_file = "data/chunk-000/file-000.parquet"
    action_key = "action"
    episodes_file = "meta/episodes/chunk-000/file-000.parquet"

    def set_feature_shape(key: str, shape: list[int]) -> Callable[[Path], str]:
        def mutate(data: Path) -> str:
            edit_json(data / "meta/info.json", lambda info: info["features"][key].update(shape=shape))
            return "info.json"

        return mutate

    def drop_camera(data: Path) -> str:
        edit_json(data / "meta/info.json", lambda info: info["features"].pop("observation.images.agentview"))
        return "info.json"

    def stats_nan(data: Path) -> str:
        text = (data / "meta/stats.json").read_text()
        stats = json.loads(text)
        stats["observation.state"]["mean"] = [float("nan")] * len(stats["observation.state"]["mean"])
        (data / "meta/stats.json").write_text(json.dumps(stats))
        return "stats.json"

    def nan_action(data: Path) -> str:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(data / data_file)
        actions = table.column(action_key).to_pylist()
        actions[3][0] = float("nan")
        column = pa.array(actions, type=table.schema.field(action_key).type)
        table = table.set_column(table.schema.get_field_index(action_key), action_key, column)
        pq.write_table(table, data / data_file)
        return action_key

    cases += [
        corrupt("NaN in one action of the data parquet", nan_action),
        corrupt("truncated data parquet", lambda d: (truncate(d / data_file), data_file)[1]),
        corrupt("deleted data parquet", lambda d: ((d / data_file).unlink(), data_file)[1]),
        corrupt("deleted episodes metadata", lambda d: ((d / episodes_file).unlink(), episodes_file)[1]),
        corrupt("deleted tasks.parquet", lambda d: ((d / "meta/tasks.parquet").unlink(), "tasks.parquet")[1]),
        corrupt(
            "info.json not JSON", lambda d: ((d / "meta/info.json").write_text("{fps: 20"), "info.json")[1]
        ),
        corrupt("info.json state shape [9]", set_feature_shape("observation.state", [9])),
        corrupt("info.json action shape [6]", set_feature_shape("action", [6])),
        corrupt(
            "info.json fps 10",
            lambda d: (edit_json(d / "meta/info.json", lambda i: i.update(fps=10)), "fps")[1],
        ),
        corrupt(
            "info.json total_episodes 5",
            lambda d: (edit_json(d / "meta/info.json", lambda i: i.update(total_episodes=5)), "info.json")[1],
        ),
        corrupt("info.json without a camera", drop_camera),
        corrupt("stats.json with NaN means", stats_nan),
        corrupt("no .complete marker (generate=true)", lambda d: ((d / ".complete").unlink(), "")[1]),
        corrupt(
            "no .complete marker (generate=false)",
            lambda d: ((d / ".complete").unlink(), "")[1],
            ["env.dataset.generate=false"],
        ),
    ]
    return cases


def resume_cases() -> list[Case]:
    """trainer.resume=true on a copy of the finished fixture run: changed settings, damaged files."""
    cases = []
    latest = "checkpoints/step_0000020"

    def R(
        name: str,
        mutate: Callable[[Path], Any] | None,
        overrides: list[str],
        tokens: tuple[str, ...],
        expect: str = "refused",
    ) -> Case:
        def build(ctx: Ctx) -> Spec:
            run = ctx.copy_run()
            if mutate:
                mutate(run)
            if expect == "refused":  # a refused resume leaves the run as it was
                ctx.protect(run, frozenset({".hydra", "train.log"}))
            argv = [PY, TRAIN, *merged([*resume_base(ctx, run), "trainer.resume=true"], overrides)]
            return Spec(argv, tokens)

        return Case(f"train/resume {name}", expect, build, needs=("run",))

    def tear_metrics(run: Path) -> None:
        with (run / "metrics.jsonl").open("a") as file:
            file.write('{"step": 21, "train/lo')

    def tear_and_drop_latest(run: Path) -> None:
        shutil.rmtree(run / latest)
        tear_metrics(run)

    def garbage_middle_metrics(run: Path) -> None:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        lines.insert(1, "this is not json")
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")

    def stepless_metrics(run: Path) -> None:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        lines.insert(1, '{"loss": 1.0}')
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")

    def fake_partial(run: Path) -> None:
        partial = run / "checkpoints/step_0000030.partial"
        shutil.copytree(run / latest, partial)
        truncate(partial / "model.safetensors", 0.3)

    cases += [
        R("with trainer.batch_size=4", None, ["trainer.batch_size=4"], ("trainer.batch_size",)),
        R("with optimizer.lr=0.001", None, ["optimizer.lr=0.001"], ("optimizer.lr",)),
        R("with trainer.seed=7", None, ["trainer.seed=7"], ("trainer.seed",)),
        R("with env.chunk_size=6", None, ["env.chunk_size=6"], ("env.chunk_size",)),
        R("with head=flow_tiny", None, ["head=flow_tiny"], ("head",)),
        R(
            "with trainer.gradient_accumulation_steps=2",
            None,
            ["trainer.gradient_accumulation_steps=2"],
            ("trainer.gradient_accumulation_steps",),
        ),
        R("with trainer.schedule=constant", None, ["trainer.schedule=constant"], ("trainer.schedule",)),
        R(
            "truncated model.safetensors",
            lambda r: truncate(r / latest / "model.safetensors"),
            [],
            ("model.safetensors",),
        ),
        R(
            "deleted model.safetensors",
            lambda r: (r / latest / "model.safetensors").unlink(),
            [],
            ("model.safetensors",),
        ),
        R(
            "garbage trainer_state.json",
            lambda r: (r / latest / "trainer_state.json").write_text("\x00garbage{"),
            [],
            ("trainer_state.json",),
        ),
        R(
            "trainer_state.json with foreign keys",
            lambda r: (r / latest / "trainer_state.json").write_text('{"foo": 1}'),
            [],
            ("trainer_state.json",),
        ),
        R("truncated optimizer.pt", lambda r: truncate(r / latest / "optimizer.pt"), [], ("optimizer.pt",)),
        R("garbage rng.pt", lambda r: (r / latest / "rng.pt").write_bytes(os.urandom(512)), [], ("rng.pt",)),
        R("deleted scheduler.pt", lambda r: (r / latest / "scheduler.pt").unlink(), [], ("scheduler.pt",)),
        R(
            "garbage config.yaml",
            lambda r: (r / "config.yaml").write_text("trainer: [unclosed\n  - :"),
            [],
            ("config.yaml",),
        ),
        R("garbage line inside metrics.jsonl", garbage_middle_metrics, [], ("metrics.jsonl",)),
        R("metrics.jsonl line without a step", stepless_metrics, [], ("metrics.jsonl",)),
        R("trainer.resume=<missing path>", None, ["trainer.resume=/nonexistent/run"], ("trainer.resume",)),
        R("accepted: finished run, same config", None, [], (), expect="accepted"),
        R("accepted: torn last metrics.jsonl line", tear_metrics, [], (), expect="accepted"),
        R(
            "accepted: torn last line, resumed from step 10",
            tear_and_drop_latest,
            ["trainer.stop_at_step=12"],
            (),
            expect="accepted",
        ),
        R(
            "accepted: a step_N.partial dir (state file, torn weights) is ignored",
            fake_partial,
            [],
            (),
            expect="accepted",
        ),
    ]

    def from_other_run_changed_lr(ctx: Ctx) -> Spec:
        run = ctx.copy_run()
        ctx.protect(run, frozenset({".hydra", "train.log"}))
        fresh = ctx.dir / "fresh"
        argv = [
            PY,
            TRAIN,
            *merged(resume_base(ctx, fresh), [f"trainer.resume={run / latest}", "optimizer.lr=0.002"]),
        ]
        return Spec(argv, ("optimizer.lr",))

    cases.append(
        Case(
            "train/resume from another run's checkpoint with optimizer.lr=0.002",
            "refused",
            from_other_run_changed_lr,
            needs=("run",),
        )
    )
    return cases


def eval_cases() -> list[Case]:
    cases = []
    quick = ["env.eval.episodes=1", "env.eval.max_steps=5", "env.eval.num_workers=1", "env.eval.videos=0"]

    def E(
        name: str,
        prepare: Callable[[Ctx, Path], tuple[list[str], tuple[str, ...]]],
        expect: str = "refused",
        protect: bool = True,
    ) -> Case:
        def build(ctx: Ctx) -> Spec:
            run = ctx.copy_run()
            args, tokens = prepare(ctx, run)
            if protect and expect == "refused":
                ctx.protect(run / "checkpoints")
            return Spec([PY, EVAL, *args], tokens)

        return Case(f"eval/{name}", expect, build, needs=("run",))

    def overrides(
        *values: str, tokens: tuple[str, ...]
    ) -> Callable[[Ctx, Path], tuple[list[str], tuple[str, ...]]]:
        keys = {override_key(v) for v in values if "=" in v}
        fast = [q for q in quick if override_key(q) not in keys] if "--device" not in values else []
        return lambda ctx, run: ([str(run), *values, *fast], tokens)

    def nonexistent(ctx: Ctx, run: Path) -> tuple[list[str], tuple[str, ...]]:
        return [str(ctx.dir / "no_such_run")], (str(ctx.dir / "no_such_run"),)

    def a_file(ctx: Ctx, run: Path) -> tuple[list[str], tuple[str, ...]]:
        return [str(run / "config.yaml")], (str(run / "config.yaml"),)

    def no_checkpoints(ctx: Ctx, run: Path) -> tuple[list[str], tuple[str, ...]]:
        shutil.rmtree(run / "checkpoints")
        return [str(run)], (str(run),)

    def empty_checkpoints(ctx: Ctx, run: Path) -> tuple[list[str], tuple[str, ...]]:
        shutil.rmtree(run / "checkpoints")
        (run / "checkpoints").mkdir()
        return [str(run)], (str(run),)

    def weights(action: str) -> Callable[[Ctx, Path], tuple[list[str], tuple[str, ...]]]:
        def prepare(ctx: Ctx, run: Path) -> tuple[list[str], tuple[str, ...]]:
            file = run / "checkpoints/step_0000020/model.safetensors"
            if action == "delete":
                file.unlink()
            elif action == "truncate":
                truncate(file)
            elif action == "nan":  # readable, every shape right: only the values are broken
                import numpy as np
                from safetensors.numpy import load_file, save_file

                tensors = load_file(file)
                name = next(iter(tensors))
                save_file({**tensors, name: np.full_like(tensors[name], np.nan)}, file)
                return [str(run / "checkpoints/step_0000020")], ("model.safetensors", "non-finite")
            else:
                file.write_bytes(os.urandom(2048))
            return [str(run / "checkpoints/step_0000020")], ("model.safetensors",)

        return prepare

    def no_config(ctx: Ctx, run: Path) -> tuple[list[str], tuple[str, ...]]:
        (run / "config.yaml").unlink()
        return [str(run)], ("config.yaml",)

    def garbage_config(ctx: Ctx, run: Path) -> tuple[list[str], tuple[str, ...]]:
        (run / "config.yaml").write_text(": : [not yaml\n\t-")
        return [str(run)], ("config.yaml",)

    def traversal(ctx: Ctx, run: Path) -> tuple[list[str], tuple[str, ...]]:
        ctx.user(ctx.dir / "x")  # run/eval/../../x
        return [str(run), *quick, "--name", "../../x"], ("--name", "../../x")

    def absolute_name(ctx: Ctx, run: Path) -> tuple[list[str], tuple[str, ...]]:
        return [str(run), *quick, "--name", str(ctx.user_dir)], ("--name", str(ctx.user_dir))

    def empty_name(ctx: Ctx, run: Path) -> tuple[list[str], tuple[str, ...]]:
        return [str(run), *quick, "--name", ""], ("--name",)

    def user_eval_dir(ctx: Ctx, run: Path) -> tuple[list[str], tuple[str, ...]]:
        target = ctx.user(run / "eval" / "mine")
        (target / "episodes.jsonl").write_text('{"my": "own results"}\n')
        ctx.protect(target)
        return [str(run), *quick, "--name", "mine"], ("mine",)

    def other_protocol_results(ctx: Ctx, run: Path) -> tuple[list[str], tuple[str, ...]]:
        """An evaluation of 5 steps per episode already in eval/step_0000020; the default is 40."""
        results = run / "eval" / "step_0000020"
        results.mkdir(parents=True)
        record = {"key": "robosuite_lift#0", "task": "robosuite_lift", "trial": 0, "seed": 100000}
        record.update(max_steps=5, init_state=None, group="robosuite_lift", video=False, success=True)
        (results / "episodes.jsonl").write_text(json.dumps(record) + "\n")
        ctx.protect(results)
        return [str(run), *[q for q in quick if "max_steps" not in q]], ("max_steps",)

    cases += [
        E("continuing results measured with another max_steps", other_protocol_results),
        E("nonexistent path", nonexistent),
        E("path is a file", a_file),
        E("run without checkpoints", no_checkpoints),
        E("run with an empty checkpoints dir", empty_checkpoints),
        E("checkpoint without model.safetensors", weights("delete")),
        E("truncated model.safetensors", weights("truncate")),
        E("garbage model.safetensors", weights("garbage")),
        E("NaN weights in model.safetensors", weights("nan")),
        E("run without config.yaml", no_config),
        E("garbage config.yaml", garbage_config),
        E("env.chunk_size=4", overrides("env.chunk_size=4", tokens=("env.chunk_size",))),
        E("head.num_queries=4", overrides("head.num_queries=4", tokens=("head.num_queries",))),
        E("env.action_dim=3", overrides("env.action_dim=3", tokens=("env.action_dim",))),
        E("env.state_dim=5", overrides("env.state_dim=5", tokens=("env.state_dim",))),
        E(
            "backbone.vision_width=32",
            overrides("backbone.vision_width=32", tokens=("backbone.vision_width",)),
        ),
        E("env.n_action_steps=9", overrides("env.n_action_steps=9", tokens=("env.n_action_steps",))),
        E("unknown key foo=1", overrides("foo=1", tokens=("foo",))),
        E("misspelled env.eval.taks=[0]", overrides("env.eval.taks=[0]", tokens=("env.eval.taks",))),
        E("misspelled env.evel.episodes=1", overrides("env.evel.episodes=1", tokens=("env.evel",))),
        E(
            "env.eval.tasks=[5] on a one-task env",
            overrides("env.eval.tasks=[5]", *quick[1:], tokens=("env.eval.tasks",)),
        ),
        E("env.eval.num_workers=0", overrides("env.eval.num_workers=0", tokens=("env.eval.num_workers",))),
        E("env.eval.num_workers=-1", overrides("env.eval.num_workers=-1", tokens=("env.eval.num_workers",))),
        E("env.fps=0", overrides("env.fps=0", tokens=("env.fps",))),
        E(
            "env.cameras=[agentview,nope]",
            overrides("env.cameras=[agentview,nope]", tokens=("env.cameras",)),
        ),
        E("env.simulator.task=Lfit", overrides("env.simulator.task=Lfit", tokens=("env.simulator.task",))),
        E(
            "env.simulator.controller=OSC",
            overrides("env.simulator.controller=OSC", tokens=("env.simulator.controller",)),
        ),
        E("env.eval.episodes=-1", overrides("env.eval.episodes=-1", tokens=("env.eval.episodes",))),
        E("env.eval.episodes=0", overrides("env.eval.episodes=0", tokens=("env.eval.episodes",))),
        E("env.eval.max_steps=abc", overrides("env.eval.max_steps=abc", tokens=("env.eval.max_steps",))),
        E("override without '='", overrides("env.eval.episodes", tokens=("env.eval.episodes",))),
        E("override '=5'", overrides("=5", tokens=("=5",))),
        E("--name ../../x (path traversal)", traversal),
        E("--name <absolute user dir>", absolute_name),
        E("--name '' (empty)", empty_name),
        E("--name into a user's dir under eval/", user_eval_dir),
        E("--device cuda without a GPU", overrides(*quick, "--device", "cuda", tokens=("cuda", "--device"))),
        E("--device tpu", overrides(*quick, "--device", "tpu", tokens=("tpu", "--device"))),
        E("accepted: run dir, 1 short episode", overrides(*quick, tokens=()), expect="accepted"),
        E(
            "accepted: checkpoint dir step_0000010",
            lambda ctx, run: ([str(run / "checkpoints/step_0000010"), *quick], ()),
            expect="accepted",
        ),
        E("accepted: --name quick", overrides(*quick, "--name", "quick", tokens=()), expect="accepted"),
    ]
    return cases


def serve_cli_cases() -> list[Case]:
    cases = []

    def S(
        name: str,
        args: Callable[[Ctx], tuple[list[str], tuple[str, ...]]] | list[str],
        tokens: tuple[str, ...] = (),
        needs_run: bool = True,
    ) -> Case:
        def build(ctx: Ctx) -> Spec:
            if callable(args):
                extra, toks = args(ctx)
            else:
                extra, toks = [str(ctx.fx.run), *args], tokens
            return Spec([PY, SERVE, *extra], toks, watch_serving=True)

        return Case(f"serve/{name}", "refused", build, needs=("run",) if needs_run else (), timeout=120)

    def port_in_use(ctx: Ctx) -> Spec:
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        return Spec(
            [PY, SERVE, str(ctx.fx.run), "--port", str(port)],
            (str(port), "--port"),
            watch_serving=True,
            resources=[holder],
        )

    cases += [
        S("--port -5", ["--port", "-5"], ("--port", "-5")),
        S("--port 70000", ["--port", "70000"], ("--port", "70000")),
        S("--port 65536", ["--port", "65536"], ("--port", "65536")),
        S("--port abc", ["--port", "abc"], ("--port",)),
        S("--port ''", ["--port", ""], ("--port",)),
        S(
            "--host 203.0.113.7 (not this machine)",
            ["--host", "203.0.113.7", "--port", "0"],
            ("203.0.113.7", "--host"),
        ),
        S(
            "--host nonexistent.invalid",
            ["--host", "nonexistent.invalid", "--port", "0"],
            ("nonexistent.invalid", "--host"),
        ),
        S("--host 999.1.1.1", ["--host", "999.1.1.1", "--port", "0"], ("999.1.1.1", "--host")),
        S("--max-batch 0", ["--max-batch", "0", "--port", "0"], ("--max-batch",)),
        S("--batch-wait-ms -1", ["--batch-wait-ms", "-1", "--port", "0"], ("--batch-wait-ms",)),
        S("--batch-wait-ms nan", ["--batch-wait-ms", "nan", "--port", "0"], ("--batch-wait-ms",)),
        S("--batch-wait-ms inf", ["--batch-wait-ms", "inf", "--port", "0"], ("--batch-wait-ms",)),
        S("unknown override foo=1", ["foo=1", "--port", "0"], ("foo",)),
        S("env.chunk_size=4 (other shapes)", ["env.chunk_size=4", "--port", "0"], ("env.chunk_size",)),
        S(
            "nonexistent checkpoint",
            lambda ctx: ([str(ctx.dir / "nope"), "--port", "0"], (str(ctx.dir / "nope"),)),
            needs_run=False,
        ),
        S(
            "checkpoint path is a file",
            lambda ctx: (
                [str(ctx.user_dir / "notes.txt"), "--port", "0"],
                (str(ctx.user_dir / "notes.txt"),),
            ),
            needs_run=False,
        ),
        Case("serve/port already in use", "refused", port_in_use, needs=("run",), timeout=120),
    ]
    return cases


def server_request_cases() -> list[ServerCase]:
    """Bad requests to a running serve.py, each followed by a good one (the server must keep serving)."""
    import msgpack
    import numpy as np

    from vla_train.serving.wire import pack

    def good(meta: dict[str, Any]) -> dict[str, Any]:
        size, cams = int(meta["image_size"]), len(meta["cameras"])
        return {
            "images": np.full((cams, 3, size, size), 0.5, np.float32),
            "state": np.zeros(int(meta["state_dim"]), np.float32),
            "instruction": "lift the red cube",
        }

    def with_item(**changes: Any) -> Callable[[dict[str, Any]], bytes]:
        def message(meta: dict[str, Any]) -> bytes:
            item = good(meta)
            for key, value in changes.items():
                if value is _DROP:
                    item.pop(key)
                else:
                    item[key] = value(meta) if callable(value) else value
            return pack({"inputs": [item]})

        return message

    def images(shape_fn: Callable[[int, int], tuple[int, ...]], dtype: Any = np.float32, fill: float = 0.5):
        return lambda meta: np.full(shape_fn(len(meta["cameras"]), int(meta["image_size"])), fill, dtype)

    def state(values: Callable[[int], Any]):
        return lambda meta: values(int(meta["state_dim"]))

    def raw_array(dtype: str, shape: tuple[int, ...], data: bytes) -> dict[bytes, Any]:
        return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": list(shape)}

    def raw_images(dtype: str, itemsize: int, shape: tuple[int, ...] | None = None, short: bool = False):
        def message(meta: dict[str, Any]) -> bytes:
            item = good(meta)
            full = shape or (len(meta["cameras"]), 3, int(meta["image_size"]), int(meta["image_size"]))
            count = int(np.prod([abs(n) for n in full]))
            data = bytes(itemsize * count // (2 if short else 1))
            item["images"] = raw_array(dtype, full, data)
            item["state"] = raw_array("<f4", (int(meta["state_dim"]),), bytes(4 * int(meta["state_dim"])))
            return msgpack.packb({"inputs": [item]}, use_bin_type=True)

        return message

    def nested(depth: int) -> Callable[[dict[str, Any]], bytes]:
        def message(meta: dict[str, Any]) -> bytes:
            return b"\x91" * depth + b"\xc0"  # fixarray of one element, `depth` deep, then nil

        return message

    def packed(obj_fn: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], bytes]:
        return lambda meta: pack(obj_fn(meta))

    def truncated(meta: dict[str, Any]) -> bytes:
        data = pack({"inputs": [good(meta)]})
        return data[: len(data) // 2]

    def two_inputs_second_bad(meta: dict[str, Any]) -> bytes:
        bad = good(meta)
        bad["state"] = np.full(int(meta["state_dim"]), np.nan, np.float32)
        return pack({"inputs": [good(meta), bad]})

    def batch(n: int) -> Callable[[dict[str, Any]], bytes]:
        return lambda meta: pack({"inputs": [good(meta) for _ in range(n)]})

    def scalar_complex(meta: dict[str, Any]) -> bytes:
        item = good(meta)
        item["instruction"] = {b"__npgeneric__": True, b"data": 1.0, b"dtype": "<c8"}
        item["images"] = raw_array("<f4", item["images"].shape, item["images"].tobytes())
        item["state"] = raw_array("<f4", item["state"].shape, item["state"].tobytes())
        return msgpack.packb({"inputs": [item]}, use_bin_type=True)

    f32 = np.float32
    cases = [
        ServerCase("server/accepted: good request", "accepted", (), with_item()),
        ServerCase(
            "server/accepted: int64 state",
            "accepted",
            (),
            with_item(state=state(lambda n: np.zeros(n, np.int64))),
        ),
        ServerCase(
            "server/accepted: float64 images",
            "accepted",
            (),
            with_item(images=images(lambda c, s: (c, 3, s, s), np.float64)),
        ),
        ServerCase(
            "server/accepted: unicode instruction",
            "accepted",
            (),
            with_item(instruction="\u63d0\u8d77\u7ea2\u8272\u65b9\u5757 \U0001f7e5"),
        ),
        ServerCase("server/accepted: empty instruction", "accepted", (), with_item(instruction="")),
        ServerCase(
            "server/accepted: 100k-character instruction",
            "accepted",
            (),
            with_item(instruction="lift " * 20000),
        ),
        ServerCase("server/accepted: batch of 70 inputs (> --max-batch 64)", "accepted", (), batch(70)),
        # states
        ServerCase(
            "server/state NaN",
            "refused",
            ("state",),
            with_item(state=state(lambda n: np.full(n, np.nan, f32))),
        ),
        ServerCase(
            "server/state inf",
            "refused",
            ("state",),
            with_item(state=state(lambda n: np.full(n, np.inf, f32))),
        ),
        ServerCase(
            "server/state -inf in one entry",
            "refused",
            ("state",),
            with_item(state=state(lambda n: np.array([0] * (n - 1) + [-np.inf], f32))),
        ),
        ServerCase(
            "server/state 1e30",
            "refused",
            ("state",),
            with_item(state=state(lambda n: np.full(n, 1e30, f32))),
        ),
        ServerCase(
            "server/state 1e300 float64 (inf as float32)",
            "refused",
            ("state",),
            with_item(state=state(lambda n: np.full(n, 1e300, np.float64))),
        ),
        ServerCase(
            "server/state too short",
            "refused",
            ("state",),
            with_item(state=state(lambda n: np.zeros(n - 1, f32))),
        ),
        ServerCase(
            "server/state too long",
            "refused",
            ("state",),
            with_item(state=state(lambda n: np.zeros(n + 1, f32))),
        ),
        ServerCase(
            "server/state 2-D", "refused", ("state",), with_item(state=state(lambda n: np.zeros((1, n), f32)))
        ),
        ServerCase(
            "server/state empty", "refused", ("state",), with_item(state=state(lambda n: np.zeros(0, f32)))
        ),
        ServerCase(
            "server/state numpy scalar", "refused", ("state",), with_item(state=lambda meta: np.float32(0.0))
        ),
        ServerCase(
            "server/state python list", "refused", ("state",), with_item(state=state(lambda n: [0.0] * n))
        ),
        ServerCase(
            "server/state strings",
            "refused",
            ("state",),
            with_item(state=state(lambda n: np.array(["a"] * n))),
        ),
        ServerCase(
            "server/state bool", "refused", ("state",), with_item(state=state(lambda n: np.zeros(n, bool)))
        ),
        # image dtypes and values
        ServerCase(
            "server/images uint16",
            "refused",
            ("images",),
            with_item(images=images(lambda c, s: (c, 3, s, s), np.uint16, 1)),
        ),
        ServerCase(
            "server/images uint8",
            "refused",
            ("images",),
            with_item(images=images(lambda c, s: (c, 3, s, s), np.uint8, 1)),
        ),
        ServerCase(
            "server/images bool",
            "refused",
            ("images",),
            with_item(images=images(lambda c, s: (c, 3, s, s), bool, 1)),
        ),
        ServerCase(
            "server/images int32",
            "refused",
            ("images",),
            with_item(images=images(lambda c, s: (c, 3, s, s), np.int32, 0)),
        ),
        ServerCase(
            "server/images complex64 (raw wire)", "refused", ("complex64", "dtype"), raw_images("<c8", 8)
        ),
        ServerCase(
            "server/images float16",
            "accepted",
            (),
            with_item(images=images(lambda c, s: (c, 3, s, s), np.float16)),
        ),
        ServerCase(
            "server/images NaN",
            "refused",
            ("images",),
            with_item(images=images(lambda c, s: (c, 3, s, s), f32, np.nan)),
        ),
        ServerCase(
            "server/images 255.0 (not in [0, 1])",
            "refused",
            ("images",),
            with_item(images=images(lambda c, s: (c, 3, s, s), f32, 255.0)),
        ),
        ServerCase(
            "server/images negative",
            "refused",
            ("images",),
            with_item(images=images(lambda c, s: (c, 3, s, s), f32, -0.5)),
        ),
        # image shapes and cameras
        ServerCase(
            "server/one camera", "refused", ("camera",), with_item(images=images(lambda c, s: (1, 3, s, s)))
        ),
        ServerCase(
            "server/three cameras",
            "refused",
            ("camera",),
            with_item(images=images(lambda c, s: (3, 3, s, s))),
        ),
        ServerCase(
            "server/zero cameras", "refused", ("camera",), with_item(images=images(lambda c, s: (0, 3, s, s)))
        ),
        ServerCase(
            "server/images HWC", "refused", ("images",), with_item(images=images(lambda c, s: (c, s, s, 3)))
        ),
        ServerCase(
            "server/images 4 channels",
            "refused",
            ("images",),
            with_item(images=images(lambda c, s: (c, 4, s, s))),
        ),
        ServerCase(
            "server/images 3-D", "refused", ("images",), with_item(images=images(lambda c, s: (3, s, s)))
        ),
        ServerCase(
            "server/images 5-D",
            "refused",
            ("images",),
            with_item(images=images(lambda c, s: (1, c, 3, s, s))),
        ),
        ServerCase(
            "server/images 32x32 (trained on 64)",
            "refused",
            ("images",),
            with_item(images=images(lambda c, s: (c, 3, s // 2, s // 2))),
        ),
        ServerCase(
            "server/images 128x128",
            "refused",
            ("images",),
            with_item(images=images(lambda c, s: (c, 3, 2 * s, 2 * s))),
        ),
        ServerCase(
            "server/images 64x48",
            "refused",
            ("images",),
            with_item(images=images(lambda c, s: (c, 3, s, 3 * s // 4))),
        ),
        ServerCase(
            "server/images 0x0", "refused", ("images",), with_item(images=images(lambda c, s: (c, 3, 0, 0)))
        ),
        ServerCase(
            "server/images python list", "refused", ("images",), with_item(images=lambda meta: [[[[0.5]]]])
        ),
        # keys
        ServerCase("server/missing images", "refused", ("images",), with_item(images=_DROP)),
        ServerCase("server/missing state", "refused", ("state",), with_item(state=_DROP)),
        ServerCase("server/missing instruction", "refused", ("instruction",), with_item(instruction=_DROP)),
        ServerCase("server/instruction int", "refused", ("instruction",), with_item(instruction=5)),
        ServerCase("server/instruction bytes", "refused", ("instruction",), with_item(instruction=b"lift")),
        ServerCase("server/inputs empty", "refused", ("inputs",), packed(lambda meta: {"inputs": []})),
        ServerCase(
            "server/inputs a dict", "refused", ("inputs",), packed(lambda meta: {"inputs": good(meta)})
        ),
        ServerCase("server/inputs item an int", "refused", ("inputs",), packed(lambda meta: {"inputs": [3]})),
        ServerCase("server/request a list", "refused", ("inputs",), packed(lambda meta: [good(meta)])),
        ServerCase("server/request nil", "refused", ("inputs",), lambda meta: msgpack.packb(None)),
        ServerCase("server/second input NaN state", "refused", ("inputs[1]",), two_inputs_second_bad),
        ServerCase(
            "server/openpi-style observation",
            "refused",
            ("openpi",),
            packed(lambda meta: {"observation/image": np.zeros((64, 64, 3), np.uint8), "prompt": "lift"}),
        ),
        # the wire itself
        ServerCase(
            "server/garbage bytes",
            "refused",
            ("message",),
            lambda meta: b"\xc1\xff\x00 not msgpack \x00\xde\xad\xbe\xef",
        ),
        ServerCase("server/truncated msgpack", "refused", ("message",), truncated),
        ServerCase("server/empty message", "refused", ("message",), lambda meta: b""),
        ServerCase("server/text frame", "refused", ("text",), lambda meta: "hello, policy"),
        ServerCase(
            "server/array data shorter than its shape",
            "refused",
            ("malformed",),
            raw_images("<f4", 4, short=True),
        ),
        ServerCase("server/array of objects", "refused", ("dtype",), raw_images("|O", 8)),
        ServerCase("server/array of void", "refused", ("dtype",), raw_images("|V8", 8)),
        ServerCase(
            "server/array with a negative shape",
            "refused",
            ("malformed",),
            raw_images("<f4", 4, (2, 3, -64, 64)),
        ),
        ServerCase(
            "server/array with a bogus dtype", "refused", ("malformed", "dtype"), raw_images("<q9", 4)
        ),
        ServerCase(
            "server/array claiming 10**12 elements",
            "refused",
            ("malformed",),
            raw_images("<f4", 0, (10**12,)),
        ),
        ServerCase("server/complex numpy scalar", "refused", ("dtype",), scalar_complex),
        ServerCase("server/nesting 100000 deep", "refused", ("message",), nested(100_000)),
    ]
    for case in cases:
        case.description = case.description or case.name.split("/", 1)[1]
    return cases


_DROP = object()


def convert_cases() -> list[Case]:
    cases = []

    def C(
        name: str, prepare: Callable[[Ctx], tuple[list[str], tuple[str, ...]]], expect: str = "refused"
    ) -> Case:
        def build(ctx: Ctx) -> Spec:
            args, tokens = prepare(ctx)
            return Spec([PY, CONVERT, *args], tokens)

        return Case(f"convert/{name}", expect, build, needs=("droid",))

    def h5_edit(edit: Callable[[Any], None]) -> Callable[[Ctx], tuple[list[str], tuple[str, ...]]]:
        def prepare(ctx: Ctx) -> tuple[list[str], tuple[str, ...]]:
            import h5py

            raw, episodes = ctx.copy_raw(1)
            with h5py.File(episodes[0] / "trajectory.h5", "a") as h5:
                edit(h5)
            ctx.protect(raw)
            return [str(raw), str(ctx.dir / "out")], ("trajectory.h5",)

        return prepare

    def shorten_actions(h5: Any) -> None:
        values = h5["action/joint_velocity"][:]
        del h5["action/joint_velocity"]
        h5["action/joint_velocity"] = values[:-2]

    def no_camera_types(h5: Any) -> None:
        del h5["observation/camera_type"]

    def states_nan(h5: Any) -> None:
        h5["observation/robot_state/joint_positions"][...] = float("nan")

    def file_edit(action: str, file: str, tokens_fn: Callable[[Ctx, Path], tuple[str, ...]]):
        def prepare(ctx: Ctx) -> tuple[list[str], tuple[str, ...]]:
            raw, episodes = ctx.copy_raw(1)
            target = next(episodes[0].rglob(file))
            if action == "truncate":
                truncate(target)
            elif action == "garbage":
                target.write_bytes(b"not an HDF5 file")
            elif action == "delete":
                target.unlink()
            ctx.protect(raw)
            return [str(raw), str(ctx.dir / "out")], tokens_fn(ctx, episodes[0])

        return prepare

    def missing_trajectory_only(ctx: Ctx) -> tuple[list[str], tuple[str, ...]]:
        raw, episodes = ctx.copy_raw(1)
        (episodes[0] / "trajectory.h5").unlink()
        return [str(raw), str(ctx.dir / "out")], (str(raw),)

    def missing_trajectory_beside_good(ctx: Ctx) -> tuple[list[str], tuple[str, ...]]:
        raw, episodes = ctx.copy_raw(2)
        (episodes[1] / "trajectory.h5").unlink()
        return [str(raw), str(ctx.dir / "out")], (episodes[1].name, "trajectory.h5")

    def second_episode_fails(ctx: Ctx) -> Spec:
        import h5py

        raw, episodes = ctx.copy_raw(2)
        with h5py.File(episodes[1] / "trajectory.h5", "a") as h5:
            shorten_actions(h5)  # the first episode converts; the second fails
        ctx.protect(raw)
        out = ctx.dir / "out"
        return Spec([PY, CONVERT, str(raw), str(out)], (episodes[1].name, "trajectory.h5"), never_left=[out])

    def two_wrist_cameras(ctx: Ctx) -> tuple[list[str], tuple[str, ...]]:
        import h5py

        raw, episodes = ctx.copy_raw(1)
        with h5py.File(episodes[0] / "trajectory.h5", "a") as h5:
            for serial in h5["observation/camera_type"]:
                h5[f"observation/camera_type/{serial}"][...] = 0
        return [str(raw), str(ctx.dir / "out")], (episodes[0].name,)

    def annotations(
        content: str | None, is_dir: bool = False
    ) -> Callable[[Ctx], tuple[list[str], tuple[str, ...]]]:
        def prepare(ctx: Ctx) -> tuple[list[str], tuple[str, ...]]:
            file = ctx.dir / "annotations.json"
            if is_dir:
                file.mkdir()
            elif content is not None:
                uuid = json.loads(next(ctx.fx.droid_episodes[0].glob("metadata_*.json")).read_text())["uuid"]
                file.write_text(content.replace("UUID", uuid))
            return [str(ctx.fx.droid_raw), str(ctx.dir / "out"), "--annotations", str(file)], (str(file),)

        return prepare

    def output_user_dir(ctx: Ctx) -> tuple[list[str], tuple[str, ...]]:
        ctx.protect(ctx.user_dir)
        return [str(ctx.fx.droid_raw), str(ctx.user_dir)], (str(ctx.user_dir),)

    def output_file(ctx: Ctx) -> tuple[list[str], tuple[str, ...]]:
        file = ctx.user_dir / "notes.txt"
        return [str(ctx.fx.droid_raw), str(file)], (str(file),)

    def output_complete_dataset(ctx: Ctx) -> tuple[list[str], tuple[str, ...]]:
        target = ctx.user(ctx.dir / "dataset")
        (target / ".complete").touch()
        (target / "meta").mkdir()
        (target / "meta" / "info.json").write_text('{"fps": 15}')
        ctx.protect(target)
        return [str(ctx.fx.droid_raw), str(target)], (str(target),)

    def output_symlink(ctx: Ctx) -> tuple[list[str], tuple[str, ...]]:
        link = ctx.dir / "link"
        empty = ctx.dir / "empty_target"
        empty.mkdir()
        link.symlink_to(empty)
        return [str(ctx.fx.droid_raw), str(link)], (str(link),)

    def output_under_file(ctx: Ctx) -> tuple[list[str], tuple[str, ...]]:
        target = ctx.user_dir / "notes.txt" / "out"
        return [str(ctx.fx.droid_raw), str(target)], (str(target), "notes.txt")

    def output_is_raw(ctx: Ctx) -> tuple[list[str], tuple[str, ...]]:
        raw, _ = ctx.copy_raw(1)
        ctx.protect(raw)
        return [str(raw), str(raw)], (str(raw),)

    def output_empty(ctx: Ctx) -> tuple[list[str], tuple[str, ...]]:
        ctx.user(ctx.work)
        return [str(ctx.fx.droid_raw), ""], ("output",)

    def accepted(*extra: str) -> Callable[[Ctx], tuple[list[str], tuple[str, ...]]]:
        return lambda ctx: ([str(ctx.fx.droid_raw), str(ctx.dir / "out"), *extra], ())

    def accepted_empty_dir(ctx: Ctx) -> tuple[list[str], tuple[str, ...]]:
        (ctx.dir / "out").mkdir()
        return [str(ctx.fx.droid_raw), str(ctx.dir / "out")], ()

    cases += [
        C(
            "raw dir nonexistent",
            lambda ctx: ([str(ctx.dir / "nope"), str(ctx.dir / "out")], (str(ctx.dir / "nope"),)),
        ),
        C(
            "raw is a file",
            lambda ctx: (
                [str(ctx.user_dir / "notes.txt"), str(ctx.dir / "out")],
                (str(ctx.user_dir / "notes.txt"),),
            ),
        ),
        C(
            "raw dir empty",
            lambda ctx: (
                (ctx.dir / "empty").mkdir(),
                [str(ctx.dir / "empty"), str(ctx.dir / "out")],
                (str(ctx.dir / "empty"),),
            )[1:],
        ),
        C(
            "raw is a user dir without recordings",
            lambda ctx: ([str(ctx.user_dir), str(ctx.dir / "out")], (str(ctx.user_dir),)),
        ),
        C("truncated trajectory.h5", file_edit("truncate", "trajectory.h5", lambda c, e: ("trajectory.h5",))),
        C("garbage trajectory.h5", file_edit("garbage", "trajectory.h5", lambda c, e: ("trajectory.h5",))),
        C("missing trajectory.h5 (only episode)", missing_trajectory_only),
        C("missing trajectory.h5 beside a good episode", missing_trajectory_beside_good),
        Case(
            "convert/second episode fails after the first converted",
            "refused",
            second_episode_fails,
            needs=("droid",),
        ),
        C("actions shorter than states", h5_edit(shorten_actions)),
        C("no camera types", h5_edit(no_camera_types)),
        C("joint positions all NaN", h5_edit(states_nan)),
        C("every camera a wrist camera", two_wrist_cameras),
        C("missing wrist MP4", file_edit("delete", "33333333.mp4", lambda c, e: ("33333333.mp4",))),
        C(
            "truncated wrist MP4",
            file_edit("truncate", "33333333.mp4", lambda c, e: ("33333333.mp4", "wrist_left")),
        ),
        C("garbage metadata json", file_edit("garbage", "metadata_*.json", lambda c, e: ("metadata_",))),
        C("annotations not JSON", annotations("{not json")),
        C("annotations a list", annotations('["UUID"]')),
        C("annotations uuid -> string", annotations('{"UUID": "place the cube"}')),
        C("annotations uuid -> list", annotations('{"UUID": ["place the cube"]}')),
        C("annotations missing file", annotations(None)),
        C("annotations a directory", annotations(None, is_dir=True)),
        C("output a user dir with files", output_user_dir),
        C("output an existing file", output_file),
        C("output a complete dataset", output_complete_dataset),
        C("output a symlink to an empty dir", output_symlink),
        C("output below a regular file", output_under_file),
        C("output the raw dir itself", output_is_raw),
        C("output '' (cwd with user files)", output_empty),
        C(
            "--state bogus",
            lambda ctx: ([str(ctx.fx.droid_raw), str(ctx.dir / "out"), "--state", "bogus"], ("--state",)),
        ),
        C(
            "--action bogus",
            lambda ctx: ([str(ctx.fx.droid_raw), str(ctx.dir / "out"), "--action", "bogus"], ("--action",)),
        ),
        C("accepted: default conversion", accepted(), expect="accepted"),
        C(
            "accepted: --state cartesian --action joint_position",
            accepted("--state", "cartesian", "--action", "joint_position"),
            expect="accepted",
        ),
        C("accepted: --include-failures", accepted("--include-failures"), expect="accepted"),
        C("accepted: output an existing empty dir", accepted_empty_dir, expect="accepted"),
    ]
    return cases


# ============================================================================================ faults
FAULT_STEPS = 12


def fault_argv(ctx: Ctx, run: Path, *extra: str) -> list[str]:
    base = [
        "experiment=smoke",
        "logger=none",
        "evaluate=false",
        f"env.dataset.root={ctx.fx.dataset}",
        f"hydra.run.dir={run}",
        f"trainer.steps={FAULT_STEPS}",
        "trainer.batch_size=2",
        "trainer.checkpoint_every=4",
        "trainer.diagnostics_every=0",
        "trainer.log_every=1",
    ]
    return [PY, TRAIN, *merged(base, list(extra))]


def checkpoint_steps(run: Path) -> list[int]:
    root = run / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(
        int(p.name.removeprefix("step_"))
        for p in root.iterdir()
        if p.is_dir() and re.fullmatch(r"step_\d+", p.name) and (p / "trainer_state.json").is_file()
    )


def metrics_steps(run: Path) -> list[int]:
    file = run / "metrics.jsonl"
    if not file.is_file():
        return []
    steps = []
    for line in file.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (
            isinstance(record, dict)
            and isinstance(record.get("step"), int)
            and any(k.startswith("train/") for k in record)
        ):
            steps.append(record["step"])
    return steps


class FaultRun:
    """Helpers shared by the fault runners: run, classify, record."""

    def __init__(self, campaign: Campaign, case: Case) -> None:
        self.campaign, self.case = campaign, case
        self.ctx = Ctx(campaign, case.name)
        self.started = time.monotonic()
        self.logs = 0

    def start(self, argv: list[str]) -> Proc:
        return Proc(argv, self.ctx.work, self.campaign.env)

    def save(self, proc: Proc) -> None:
        self.logs += 1
        (self.ctx.dir / f"stdout{self.logs}.txt").write_text(proc.stdout)
        (self.ctx.dir / f"stderr{self.logs}.txt").write_text(proc.stderr)

    def not_reached(
        self, name: str, expect: str, state: str, proc: Proc, command: str, detail: str
    ) -> list[Result]:
        """A fault case whose process timed out (a hang) or ended before the point the fault aims at."""
        outcome = "hang" if state == "timeout" else "skipped"
        return [self.result(name, expect, outcome, proc.p.returncode, command, proc, [detail])]

    def result(
        self,
        name: str,
        expect: str,
        outcome: str,
        rc: int | None,
        command: str,
        proc: Proc | None,
        details: list[str],
    ) -> Result:
        lost = self.ctx.verify()
        if lost:
            details = [f"outcome before the file check: {outcome}", *details, *lost]
            outcome = "file_lost"
        tail = tail_of(proc.stdout, proc.stderr) if proc else []
        result = Result(
            name, "fault", expect, outcome, rc, time.monotonic() - self.started, command, tail, details
        )
        self.started = time.monotonic()
        return result

    def finish_accepted(
        self, name: str, argv: list[str], command: str, check: Callable[[], list[str]]
    ) -> Result:
        proc = self.start(argv)
        state = proc.wait(self.campaign.timeout(self.case))
        proc.finish()
        self.save(proc)
        outcome, details = classify(
            "accepted", proc.p.returncode, proc.stdout, proc.stderr, (), state == "timeout"
        )
        if outcome == "clear":
            unmet = check()
            if unmet:
                outcome, details = "fault_unmet", unmet
        if proc.stragglers:
            details.append(f"processes left running 3 s after exit (killed): {proc.stragglers}")
        return self.result(name, "accepted", outcome, proc.p.returncode, command, proc, details)


def wait_for(proc: Proc, condition: Callable[[], bool], timeout: float, poll: float = 0.05) -> str:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return "until"
        if proc.p.poll() is not None:
            return "exited"
        if time.monotonic() > deadline:
            return "timeout"
        time.sleep(poll)


def fault_kill9_then_resume(campaign: Campaign, case: Case, during_save: bool = False) -> list[Result]:
    f = FaultRun(campaign, case)
    run = f.ctx.dir / "run"
    extra = ["trainer.checkpoint_every=2"] if during_save else []
    argv = fault_argv(f.ctx, run, *extra)
    first = f.start(argv)
    if during_save:
        state = wait_for(first, lambda: 2 in checkpoint_steps(run), campaign.timeout(case))
        if state == "until":
            partial = lambda: any(run.glob("checkpoints/*.partial"))  # noqa: E731
            state = wait_for(first, partial, campaign.timeout(case), poll=0.002)
        what = "while its second checkpoint was being written (*.partial seen)"
    else:
        state = wait_for(first, lambda: 4 in checkpoint_steps(run), campaign.timeout(case))
        if state == "until":
            time.sleep(2.0)
        what = "after its step-4 checkpoint, mid-step"
    killed_at = checkpoint_steps(run)
    first.signal_group(signal.SIGKILL)
    first.finish()
    f.save(first)
    command = f"kill -9 {what}: {shlex.join(argv)}; then the same with trainer.resume=true"
    if state != "until":
        return f.not_reached(
            case.name,
            "accepted",
            state,
            first,
            command,
            f"the first run {state} before the kill point ({what})",
        )

    def check() -> list[str]:
        problems = []
        if FAULT_STEPS not in checkpoint_steps(run):
            problems.append(f"no step-{FAULT_STEPS} checkpoint after the resume: {checkpoint_steps(run)}")
        steps = metrics_steps(run)
        if steps != sorted(set(steps)):
            problems.append(f"metrics.jsonl holds repeated or unordered steps: {steps}")
        return problems

    result = f.finish_accepted(case.name, [*argv, "trainer.resume=true"], command, check)
    result.details.insert(0, f"killed with checkpoints {killed_at}")
    return [result]


def fault_sigint_training(campaign: Campaign, case: Case, twice: bool = False) -> list[Result]:
    f = FaultRun(campaign, case)
    run = f.ctx.dir / "run"
    argv = fault_argv(f.ctx, run, "trainer.checkpoint_every=0")
    proc = f.start(argv)
    state = wait_for(proc, lambda: len(metrics_steps(run)) >= 2, campaign.timeout(case))
    command = f"Ctrl-C ({'twice' if twice else 'once'}) after 2 logged steps: {shlex.join(argv)}"
    if state != "until":
        proc.kill()
        f.save(proc)
        return f.not_reached(
            case.name, "refused", state, proc, command, f"training {state} before 2 steps were logged"
        )
    proc.signal_group(signal.SIGINT)
    if twice:
        time.sleep(0.3)
        proc.signal_group(signal.SIGINT)
    stopped = proc.wait(60)
    proc.finish()
    f.save(proc)
    rc = proc.p.returncode
    steps = checkpoint_steps(run)
    details = [f"exit {rc}; checkpoints {steps}"]
    if stopped == "timeout":
        outcome = "hang"
        details.append("still running 60 s after Ctrl-C (killed)")
    elif "Traceback" in proc.stdout + proc.stderr:
        outcome = "raw_traceback"
    elif not twice and rc != 130:
        outcome = "fault_unmet"
        details.append("exit status is not 130")
    elif twice and rc == 0:
        outcome = "fault_unmet"
        details.append("exit 0 after a double Ctrl-C")
    elif not twice and not [s for s in steps if s < FAULT_STEPS]:
        outcome = "fault_unmet"
        details.append("no checkpoint was left")
    else:
        outcome = "clear"
    if proc.stragglers:
        details.append("processes left running after exit (killed)")
        outcome = "fault_unmet" if outcome == "clear" else outcome
    results = [f.result(case.name, "refused", outcome, rc, command, proc, details)]
    if not twice and steps:

        def check() -> list[str]:
            return [] if FAULT_STEPS in checkpoint_steps(run) else [f"no step-{FAULT_STEPS} checkpoint"]

        resume = [*argv, "trainer.resume=true"]
        results.append(f.finish_accepted("fault/resume after Ctrl-C", resume, shlex.join(resume), check))
    return results


def fault_sigint_eval(campaign: Campaign, case: Case, final_evaluation: bool = False) -> list[Result]:
    """Ctrl-C 8 s into eval.py's episodes, or (``final_evaluation``) into train.py's evaluation after its
    last step."""
    f = FaultRun(campaign, case)
    episodes = [
        "env.eval.episodes=20",
        "env.eval.max_steps=120",
        "env.eval.num_workers=2",
        "env.eval.videos=0",
    ]
    if final_evaluation:
        run = f.ctx.dir / "run"
        argv = [PY, TRAIN, *merged(train_base(f.ctx, run), ["evaluate=true", *episodes])]
        protocol = run / "eval" / "step_0000002" / "protocol.yaml"
    else:
        run = f.ctx.copy_run()
        argv = [PY, EVAL, str(run), *episodes]
        protocol = run / "eval" / "step_0000020" / "protocol.yaml"
    program = "train.py" if final_evaluation else "eval.py"
    proc = f.start(argv)
    state = wait_for(proc, protocol.is_file, campaign.timeout(case))
    command = f"Ctrl-C 8 s into the episodes: {shlex.join(argv)}"
    if state != "until":
        proc.kill()
        f.save(proc)
        return f.not_reached(
            case.name, "refused", state, proc, command, f"{program} {state} before its episodes started"
        )
    time.sleep(8.0)
    proc.signal_group(signal.SIGINT)
    sent = time.monotonic()
    stopped = proc.wait(60)
    took = time.monotonic() - sent
    proc.finish()
    f.save(proc)
    rc = proc.p.returncode
    details = [f"exit {rc} {took:.1f} s after Ctrl-C"]
    if stopped == "timeout":
        outcome = "hang"
        details.append("still running 60 s after Ctrl-C (killed)")
    elif "Traceback" in proc.stdout + proc.stderr:
        outcome = "raw_traceback"
    elif rc == 0:
        outcome = "fault_unmet"
        details.append("exit 0: the evaluation ran on after Ctrl-C")
    else:
        outcome = "clear"
    if proc.stragglers:
        details.append(f"processes left running 3 s after exit (killed): {proc.stragglers}")
        outcome = "fault_unmet" if outcome == "clear" else outcome
    return [f.result(case.name, "refused", outcome, rc, command, proc, details)]


def fault_kill9_recording(campaign: Campaign, case: Case) -> list[Result]:
    f = FaultRun(campaign, case)
    root = f.ctx.dir / "newds"
    argv = [
        PY,
        TRAIN,
        *merged(
            train_base(f.ctx), [f"env.dataset.root={root}", "env.dataset.num_demos=1", "trainer.steps=1"]
        ),
    ]
    proc = f.start(argv)
    staging = f.ctx.dir / ".newds.recording"
    state = wait_for(proc, staging.is_dir, campaign.timeout(case))
    command = f"kill -9 3 s into recording the dataset: {shlex.join(argv)}; then the same again"
    if state == "until":
        time.sleep(3.0)
    proc.signal_group(signal.SIGKILL)
    proc.finish()
    f.save(proc)
    if state != "until":
        return f.not_reached(
            case.name, "accepted", state, proc, command, f"training {state} before recording started"
        )
    details_before = [f"after the kill: root exists={root.exists()}, staging exists={staging.exists()}"]

    def check() -> list[str]:
        return [] if (root / ".complete").is_file() else ["the dataset is not complete after the rerun"]

    result = f.finish_accepted(case.name, argv, command, check)
    result.details = details_before + result.details
    return [result]


def fault_cases() -> list[Case]:
    return [
        Case("fault/kill -9 mid-training, then resume", "accepted", runner=fault_kill9_then_resume),
        Case(
            "fault/kill -9 while a checkpoint is written, then resume",
            "accepted",
            runner=lambda c, k: fault_kill9_then_resume(c, k, during_save=True),
        ),
        Case("fault/Ctrl-C mid-training", "refused", runner=fault_sigint_training),
        Case(
            "fault/Ctrl-C twice mid-training",
            "refused",
            runner=lambda c, k: fault_sigint_training(c, k, twice=True),
        ),
        Case("fault/Ctrl-C during evaluation", "refused", runner=fault_sigint_eval, needs=("run",)),
        Case(
            "fault/Ctrl-C during train.py's final evaluation",
            "refused",
            runner=lambda c, k: fault_sigint_eval(c, k, final_evaluation=True),
        ),
        Case(
            "fault/kill -9 while recording the dataset, then rerun", "accepted", runner=fault_kill9_recording
        ),
    ]


# ------------------------------------------------------------------------------------------- train_rlvr
def rlvr_base(ctx: Ctx, run_dir: Path | None = None) -> list[str]:
    """A fast valid RLVR command: the smoke experiment, 2 steps, the task's files in the case's own dir."""
    return [
        "experiment=rlvr_smoke",
        "rl.steps=2",
        "rl.save_every=2",
        "rl.eval_examples=4",
        "rl.eval_every=0",
        "rl.diagnostics_every=0",
        f"task.source={ctx.dir / 'task'}",
        f"hydra.run.dir={run_dir or ctx.dir / 'run'}",
    ]


def R(name: str, overrides: list[str], tokens: tuple[str, ...] | str, expect: str = "refused") -> Case:
    """A train_rlvr.py case: the fast base command with ``overrides`` (which win)."""
    tokens = (tokens,) if isinstance(tokens, str) else tokens

    def build(ctx: Ctx) -> Spec:
        return Spec([PY, RLVR, *merged(rlvr_base(ctx), overrides)], tokens)

    return Case(f"rlvr/{name}", expect, build)


def rlvr_cases() -> list[Case]:
    cases = [
        R("valid smoke run", [], (), expect="accepted"),
        R("valid gmpo + per-head pion", ["algorithm=gmpo", "optimizer=pion_per_head"], (), expect="accepted"),
        R(
            "valid lpmuon, diagnostics and evaluations",
            ["optimizer=lpmuon", "rl.diagnostics_every=1", "rl.eval_every=1"],
            (),
            expect="accepted",
        ),
        R("valid max_prompt_length", ["rl.max_prompt_length=8"], (), expect="accepted"),
    ]
    for override, token in [
        ("rl.steps=0", "rl.steps"),
        ("rl.steps=-3", "rl.steps"),
        ("rl.steps=abc", "rl.steps"),
        ("rl.group_size=1", "rl.group_size"),
        ("rl.micro_batch=7", "rl.micro_batch"),
        ("rl.micro_batch=0", "rl.micro_batch"),
        ("rl.prompts_per_generation=5", "rl.prompts_per_generation"),
        ("rl.temperature=0", "rl.temperature"),
        ("rl.temperature=nan", "rl.temperature"),
        ("rl.seed=-1", "rl.seed"),
        ("rl.eval_examples=0", "rl.eval_examples"),
        ("rl.eval_every=-1", "rl.eval_every"),
        ("rl.diagnostics_every=-2", "rl.diagnostics_every"),
        ("rl.max_prompt_length=0", "rl.max_prompt_length"),
        ("rl.max_prompt_length=2", "rl.max_prompt_length"),  # no prompt is that short
        ("rl.mixed_precision=fp16", "rl.mixed_precision"),
        ("rl.use_vllm=true", "rl.use_vllm"),
        ("+rl.foo=1", "rl.foo"),
        ("optimizer.lr=inf", "optimizer.lr"),
        ("optimizer.lr=-1e-3", "optimizer.lr"),
        ("optimizer.betas=[0.9]", "optimizer.betas"),
        ("optimizer.tau=5", "optimizer.tau"),
        ("optimizer.language=sgd", "optimizer.language"),
        ("optimizer.compute_dtype=int8", "optimizer.compute_dtype"),
        ("optimizer=sgd", "optimizer"),
        ("algorithm=ppo", "algorithm"),
        ("algorithm.beta=-1", "algorithm.beta"),
        ("algorithm.epsilon=inf", "algorithm.epsilon"),
        ("experiment=rlvr_smok", "rlvr_smok"),
        ("model.dtype=int8", "model.dtype"),
        ("model.tiny.alphabet=''", "model.tiny.alphabet"),
        ("task.operands=1", "task.operands"),
        ("task.examples=2", "task.examples"),
        ("task=math", "task"),  # the hub, offline here: a clear refusal, never a hang
    ]:
        cases.append(R(f"option {override}", [override], token))

    def missing_model_dir(ctx: Ctx) -> Spec:
        target = ctx.dir / "no_such_model"
        return Spec(
            [PY, RLVR, *merged(rlvr_base(ctx), ["model=qwen3_1_7b", f"model.name_or_path={target}"])],
            (str(target),),
        )

    def task_file(content: str, task: str = "gsm8k") -> Callable[[Ctx], Spec]:
        def build(ctx: Ctx) -> Spec:
            source = ctx.dir / "mine.jsonl"
            source.write_text(content)
            ctx.protect(source)
            return Spec(
                [PY, RLVR, *merged(rlvr_base(ctx), [f"task={task}", f"task.source={source}"])], (str(source),)
            )

        return build

    def user_run_dir(ctx: Ctx) -> Spec:
        target = ctx.user(ctx.dir / "my_project")
        ctx.protect(target)
        return Spec([PY, RLVR, *merged(rlvr_base(ctx), [f"hydra.run.dir={target}"])], (str(target),))

    def user_task_dir(ctx: Ctx) -> Spec:
        target = ctx.user(ctx.dir / "my_sums")  # not the task's format: refused, never overwritten
        ctx.protect(target)
        return Spec([PY, RLVR, *merged(rlvr_base(ctx), [f"task.source={target}"])], (str(target),))

    def run_then(second: list[str], tokens: tuple[str, ...], mutate: Callable[[Path], None] | None = None):
        def build(ctx: Ctx) -> Spec:
            run = ctx.dir / "run"
            first = subprocess.run(
                [PY, RLVR, *rlvr_base(ctx, run)],
                cwd=ctx.work,
                env=ctx.campaign.env,
                capture_output=True,
                timeout=240,
            )
            if first.returncode != 0:
                raise RuntimeError(f"the first run failed: {first.stderr[-400:]!r}")
            if mutate is not None:
                mutate(run / "checkpoint-2")
            if tokens:  # a refused resume leaves the run as it was (an accepted one continues it)
                ctx.protect(run, frozenset({"train.log", ".hydra"}))
            return Spec([PY, RLVR, *merged(rlvr_base(ctx, run), second)], tokens)

        return build

    cases += [
        Case("rlvr/model.name_or_path=a missing local directory", "refused", missing_model_dir),
        Case(
            "rlvr/task file torn mid-line",
            "refused",
            task_file('{"question": "1+1=", "answer": "#### 2"}\n{"qu'),
        ),
        Case(
            "rlvr/task file without answer markers",
            "refused",
            task_file('{"question": "1+1=", "answer": "2"}\n'),
        ),
        Case("rlvr/task file with other columns", "refused", task_file('{"q": "1+1=", "a": "#### 2"}\n')),
        Case("rlvr/task file empty", "refused", task_file("")),
        Case(
            "rlvr/MATH file without boxed answers",
            "refused",
            task_file('{"problem": "1+1", "solution": "2", "level": "Level 3"}\n', "math"),
        ),
        Case("rlvr/hydra.run.dir=user dir", "refused", user_run_dir),
        Case("rlvr/task.source=user dir of other files", "refused", user_task_dir),
        Case("rlvr/rerun without rl.resume", "refused", run_then([], ("rl.resume",))),
        Case(
            "rlvr/resume with a changed group size",
            "refused",
            run_then(["rl.resume=true", "rl.steps=4", "rl.group_size=8"], ("rl.group_size",)),
        ),
        Case(
            "rlvr/resume, model.safetensors truncated",
            "refused",
            run_then(
                ["rl.resume=true", "rl.steps=4"],
                ("model.safetensors",),
                lambda c: truncate(c / "model.safetensors"),
            ),
        ),
        Case(
            "rlvr/resume, optimizer.pt truncated",
            "refused",
            run_then(
                ["rl.resume=true", "rl.steps=4"], ("optimizer.pt",), lambda c: truncate(c / "optimizer.pt")
            ),
        ),
        Case(
            "rlvr/resume, trainer_state.json torn",
            "refused",
            run_then(
                ["rl.resume=true", "rl.steps=4"],
                ("trainer_state.json",),
                lambda c: truncate(c / "trainer_state.json"),
            ),
        ),
        Case(
            "rlvr/resume, model.safetensors deleted",
            "refused",
            run_then(
                ["rl.resume=true", "rl.steps=4"],
                ("model.safetensors",),
                lambda c: (c / "model.safetensors").unlink(),
            ),
        ),
        Case("rlvr/resume to more steps", "accepted", run_then(["rl.resume=true", "rl.steps=4"], ())),
    ]
    return cases


def all_cases() -> list[Case]:
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    cases = train_cases(as_root) + eval_cases() + serve_cli_cases() + convert_cases() + rlvr_cases()
    cases += fault_cases()
    cases.append(Case("server/session", "refused", server=server_request_cases(), needs=("run",)))
    return cases


# ============================================================================================ report
def report(campaign: Campaign, snapshot_problems: list[str], elapsed: float) -> int:
    results = sorted(campaign.results, key=lambda r: (PROGRAMS.index(r.program), r.name))
    counted = [r for r in results if r.program != "fixture"]
    print("\n" + "=" * 100)
    print(f"{len(counted)} cases in {elapsed / 60:.1f} min (fixtures not counted)\n")
    columns = [o for o in OUTCOMES]
    header = f"{'program':10s}" + "".join(f"{o:>16s}" for o in columns) + f"{'total':>8s}"
    print(header)
    print("-" * len(header))
    for program in PROGRAMS:
        rows = [r for r in results if r.program == program]
        if not rows:
            continue
        counts = [sum(r.outcome == o for r in rows) for o in columns]
        print(f"{program:10s}" + "".join(f"{c:>16d}" for c in counts) + f"{len(rows):>8d}")
    counts = [sum(r.outcome == o for r in counted) for o in columns]
    print("-" * len(header))
    print(f"{'all cases':10s}" + "".join(f"{c:>16d}" for c in counts) + f"{len(counted):>8d}")
    raw = [r for r in counted if r.outcome == "raw_traceback"]
    if raw:
        traced = sum(any("Traceback" in d for d in r.details) for r in raw)
        hydra = sum(any("Hydra" in d for d in r.details) for r in raw)
        multi = sum(any("multi-line" in d for d in r.details) for r in raw)
        print(
            f"\nraw_traceback: {traced} with 'Traceback' in the output, {hydra} with Hydra's own message and "
            f"no error: line, {multi} multi-line error messages, {len(raw) - traced - hydra - multi} other"
        )
    argparse_lines = sum(any("argparse" in d for d in r.details) for r in counted if r.outcome == "clear")
    if argparse_lines:
        print(f"clear cases whose error line is argparse's '<prog>: error:' usage line: {argparse_lines}")
    bad = [r for r in results if r.outcome in BAD]
    print(f"\nbad outcomes: {len(bad)}")
    if snapshot_problems:
        print("shared fixtures changed during the campaign:")
        for problem in snapshot_problems:
            print(f"  {problem}")
    for r in results:
        if r.outcome == "clear":
            continue
        print(f"\n[{r.outcome}] {r.name}  (expected {r.expect}; exit {r.rc}; {r.seconds:.0f} s)")
        print(f"  command: {r.command}")
        if r.tokens:
            print(f"  tokens:  {r.tokens}")
        for detail in r.details:
            print(f"  note:    {detail.strip()[:1500]}")
        for line in r.tail:
            print(f"  | {line}")
    return 0 if not bad and not snapshot_problems else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", help="run the cases whose name starts with this (repeatable)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds before a case counts as a hang")
    parser.add_argument("--json", help="write every result to this file")
    parser.add_argument("--workdir", default="/tmp/fuzz_cli", help="fixtures and one directory per case")
    parser.add_argument(
        "--reuse-fixtures", action="store_true", help="keep the fixtures of an earlier campaign"
    )
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args()
    if args.jobs < 1 or args.timeout <= 0:
        parser.error("--jobs must be >= 1 and --timeout > 0")
    _reexec_in_venv()
    # Started in the background from a script (`cmd &`), this process ignores Ctrl-C, and so would every
    # program it starts: a Ctrl-C case would then measure the shell's convention, not the program's
    # handling. The campaign is interruptible and its cases start with Python's own handler.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, str(REPO))
    cases = all_cases()
    if args.only:
        selected = []
        for case in cases:
            if case.server is not None:
                requests = [r for r in case.server if any(r.name.startswith(p) for p in args.only)]
                if requests:
                    selected.append(Case(case.name, case.expect, server=requests, needs=case.needs))
            elif any(case.name.startswith(prefix) for prefix in args.only):
                selected.append(case)
        cases = selected
    names = [r.name for c in cases for r in (c.server or [c])]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SystemExit(f"duplicate case names: {duplicates}")
    if args.list:
        for case in cases:
            for item in case.server or [case]:
                print(f"{item.expect:9s} {item.name}")
        print(f"{len(names)} cases")
        return 0
    if not cases:
        parser.error(f"no case starts with {args.only}")
    campaign = Campaign(args, cases)
    campaign.workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"{campaign.total} cases, {args.jobs} at a time, timeout {args.timeout:.0f} s; "
        f"work in {campaign.workdir}",
        flush=True,
    )
    started = time.monotonic()
    try:
        campaign.run()
    except KeyboardInterrupt:
        print("interrupted; partial results follow", flush=True)
    problems = []
    if (
        campaign.dataset_snapshot is not None
        and tree_hashes(campaign.fixtures.dataset) != campaign.dataset_snapshot
    ):
        problems.append(f"the shared dataset {campaign.fixtures.dataset} changed during the campaign")
    code = report(campaign, problems, time.monotonic() - started)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "elapsed_s": time.monotonic() - started,
                    "counts": {
                        o: sum(r.outcome == o for r in campaign.results if r.program != "fixture")
                        for o in OUTCOMES
                    },
                    "results": [asdict(r) for r in campaign.results],
                },
                indent=1,
                default=str,
            )
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
