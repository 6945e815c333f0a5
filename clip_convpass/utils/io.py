"""Files that readers never see half-written: atomic writes (temporary file + rename) and JSON reads."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


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


def load_yaml(text_or_stream):
    """yaml.safe_load through libyaml's parser where present (the same data, ten times faster)."""
    import yaml

    return yaml.load(text_or_stream, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
