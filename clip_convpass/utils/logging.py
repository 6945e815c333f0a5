"""The project's log: console + per-run log.txt, progress lines with ETA (a tqdm bar on terminals).

Every module logs to ``logging.getLogger(__name__)``; all of them sit below the package logger
``clip_convpass``, which is the one `setup_logger` gives handlers.
"""
from __future__ import annotations

import datetime
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

LOGGER_NAME = "clip_convpass"
logger = logging.getLogger(LOGGER_NAME)

_console_level = logging.INFO


def set_console_level(level: int) -> None:
    """How much reaches stdout (e.g. WARNING for the demo); run directories' log.txt files keep everything."""
    global _console_level
    _console_level = level
    for h in logger.handlers:
        if not isinstance(h, logging.FileHandler):
            h.setLevel(level)


def setup_logger(output_dir: Optional[str | os.PathLike], log_name: str = "log.txt",
                 level: int = logging.INFO) -> logging.Logger:
    """Log to stdout (at the console level) and append to <output_dir>/<log_name>."""
    logger.setLevel(level)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    sh = logging.StreamHandler(sys.stdout)
    sh.setFormatter(fmt)
    sh.setLevel(_console_level)
    sh.addFilter(_NoProgressLinesOnBars())
    logger.addHandler(sh)
    if output_dir:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(Path(output_dir) / log_name)
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return logger


def format_seconds(sec: float) -> str:
    return str(datetime.timedelta(seconds=int(max(sec, 0))))


def _console_shows_bars() -> bool:
    """A tqdm bar replaces the progress lines on the console when stdout is a terminal showing INFO."""
    return sys.stdout.isatty() and _console_level <= logging.INFO


class _NoProgressLinesOnBars(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(record, "progress", False) and _console_shows_bars())


class RunClock:
    """Run-level ETA over all remaining steps of a run (not only the current epoch)."""

    def __init__(self, total_steps: int):
        self.total, self.done, self.start = max(1, total_steps), 0, time.time()

    def step(self) -> str:
        self.done += 1
        elapsed = time.time() - self.start
        return f"run eta {format_seconds(elapsed / self.done * (self.total - self.done))}"


class Progress:
    """Logs 'desc [i/n] elapsed ... eta ...' every `every` steps and at the end (log files, pipes); on a
    terminal a tqdm bar shows the same instead of the lines. `run` adds the run-level ETA."""

    def __init__(self, total: int, desc: str, every: int = 10, log: logging.Logger = logger,
                 run: Optional[RunClock] = None):
        self.total, self.desc, self.every, self.log, self.run = total, desc, max(1, every), log, run
        self.start = time.time()
        self.count = 0
        self.bar = None
        if _console_shows_bars():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)

    def step(self, extra: str = "") -> None:
        self.count += 1
        run_eta = self.run.step() if self.run is not None else ""
        if self.bar is not None:
            self.bar.update(1)
            if run_eta:
                self.bar.set_postfix_str(run_eta, refresh=False)
            if self.count == self.total:
                self.bar.close()
        if self.count % self.every and self.count != self.total:
            return
        elapsed = time.time() - self.start
        eta = elapsed / self.count * (self.total - self.count)
        msg = f"{self.desc} [{self.count}/{self.total}] elapsed {format_seconds(elapsed)} eta {format_seconds(eta)}"
        msg += "".join(f" {x}" for x in (run_eta, extra) if x)
        self.log.info(msg, extra={"progress": True})
