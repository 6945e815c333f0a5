"""The project's own errors: each says what is wrong and what to do, in one line.

Command-line entry points print them as `error: <message>` with exit code 2 (`--debug` shows the
traceback); anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Callable, List, Optional


class UserError(Exception):
    """Bad input or state the user can fix (config, data layout, weights, a busy or mismatched run)."""


UNSAFE_LOAD_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def refuse_unsafe_load_override() -> None:
    """torch honours this variable by unpickling arbitrary objects: a weights file could run code."""
    if os.environ.get(UNSAFE_LOAD_ENV, "").strip().lower() not in ("", "0", "false"):
        raise UserError(f"{UNSAFE_LOAD_ENV} is set: it makes torch.load run code from weight files, which this "
                        f"project never allows; unset it")


def run_cli(main: Callable[[Optional[List[str]]], int], argv: Optional[List[str]] = None) -> int:
    """Run an entry point: a UserError becomes one line on stderr and exit code 2 (unless --debug)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    try:
        return main(argv)
    except UserError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


def entry_point(main: Callable[[Optional[List[str]]], int]) -> Callable[[Optional[List[str]]], int]:
    """Decorator for every command's main(argv): the one place that turns the project's errors into one line
    on stderr and exit code 2 (`--debug` shows the traceback)."""

    @functools.wraps(main)
    def wrapped(argv: Optional[List[str]] = None) -> int:
        return run_cli(main, argv)

    return wrapped
