"""Small shared helpers: seeding, devices, atomic file writes, logging, progress with ETA."""
from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import random
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from .errors import UserError

LOGGER_NAME = "clip_convpass"
logger = logging.getLogger(LOGGER_NAME)


def set_random_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # numpy is optional
        pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE={name!r} was requested but CUDA is not available; use DEVICE cpu or auto")
    return dev


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; results, splits, checkpoints and cache entries get the mode any other
# file would (0666 less the umask), so that people sharing a results or cache folder can read them.
FILE_MODE = 0o666 & ~_current_umask()


def _atomic_write(path: Path, write_fn, mode: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, FILE_MODE)
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON via a temporary file + rename, so readers never see a partial file."""
    _atomic_write(Path(path), lambda f: f.write(json.dumps(obj, indent=2, sort_keys=False) + "\n"), "w")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    _atomic_write(Path(path), lambda f: f.write(text), "w")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    _atomic_write(Path(path), lambda f: torch.save(obj, f), "wb")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


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


def environment_info() -> dict:
    import open_clip
    import torchvision

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "open_clip": open_clip.__version__,
        "cuda_available": torch.cuda.is_available(),
        "num_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


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


class LockedError(UserError, RuntimeError):
    """Another process is using the same output directory or cache entry."""


@contextmanager
def _flock(path: str | os.PathLike, blocking: bool, what: str) -> Iterator[None]:
    """An advisory fcntl lock, released by the OS even if the holder is killed (so a resume never waits)."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # a lock file holds only a pid: another user sharing the folder must be able to take it too
        fd, how = os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "r+"
    except PermissionError:
        fd, how = os.open(path, os.O_RDONLY), "r"  # flock works on a read-only descriptor; no pid written
    if os.fstat(fd).st_uid == os.getuid():
        os.fchmod(fd, 0o666)
    with os.fdopen(fd, how) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError as e:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise LockedError(f"{what} is in use by another process (pid {holder}, lock {path}); "
                              f"wait for it to finish or use another directory") from e
        try:
            if f.writable():
                f.seek(0)
                f.truncate()
                f.write(f"{os.getpid()}\n")
                f.flush()
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def exclusive_lock(path: str | os.PathLike, what: str):
    """Fail at once if another process holds the lock."""
    return _flock(path, False, what)


def blocking_lock(path: str | os.PathLike):
    """Wait for another process holding the lock (e.g. computing the same cache entry)."""
    return _flock(path, True, str(path))
