"""Progress of training and evaluation: a tqdm bar on a terminal, a plain line every N seconds elsewhere.

Under SLURM, nohup or CI, stderr is a file, and tqdm's carriage-return redraws pile up into one
unreadable line per refresh; rich prints nothing at all off a terminal. So off a terminal a line such
as ``train step 120/1500 (8%) loss=0.4123 lr=1.00e-04 samples_per_s=42 skipped=0 elapsed 0:01:23
ETA 0:15:12`` is written every ``interval_s`` seconds (and at the end), which ``tail -f``, ``grep``
and log collectors read.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any, TextIO

from tqdm.auto import tqdm


class LineProgress:
    """The part of tqdm's interface the trainer and the evaluator use, printed as plain lines.

    Args:
        total: the count at the end.
        initial: the count it starts from (a resumed run's step).
        desc: the line's first word.
        unit: what is counted (``step``, ``episode``).
        interval_s: seconds between lines; the end is always printed.
        stream: where lines go (stderr, as tqdm's bars).
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        desc: str = "train",
        unit: str = "step",
        interval_s: float = 30.0,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.n, self.desc, self.unit, self.interval_s = total, initial, desc, unit, interval_s
        self.stream = stream if stream is not None else sys.stderr
        self._initial, self._postfix = initial, ""
        self._start = self._last_line = time.monotonic()

    def set_postfix(self, **values: Any) -> None:
        self._postfix = " ".join(f"{key}={value}" for key, value in values.items())

    def update(self, count: int = 1) -> None:
        self.n += count
        now = time.monotonic()
        if now - self._last_line >= self.interval_s or self.n >= self.total:
            self._last_line = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        elapsed = (time.monotonic() if now is None else now) - self._start
        done = self.n - self._initial
        eta = "?" if done <= 0 else _clock(elapsed / done * (self.total - self.n))
        percent = 100 * self.n // max(self.total, 1)
        head = f"{self.desc} {self.unit} {self.n}/{self.total} ({percent}%)"
        return " ".join(
            part for part in (head, self._postfix, f"elapsed {_clock(elapsed)} ETA {eta}") if part
        )

    def close(self) -> None:
        pass

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def progress_bar(
    total: int,
    desc: str,
    unit: str = "step",
    initial: int = 0,
    enabled: bool = True,
    interval_s: float = 30.0,
    stream: TextIO | None = None,
) -> tqdm | LineProgress:
    """A bar where a person watches a terminal, plain lines where stderr is a file or a pipe."""
    stream = stream if stream is not None else sys.stderr
    if enabled and not stream.isatty():
        return LineProgress(total, initial, desc, unit, interval_s, stream)
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, disable=not enabled, file=stream)
