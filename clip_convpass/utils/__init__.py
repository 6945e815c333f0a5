"""Helpers every layer may use: errors, io (atomic writes), locks, logging and progress, runtime
(seed, device, environment), distributed (rank and world size), args, paths, text."""

# names that lived in the flat clip_convpass/utils.py, importable from here as before
_MOVED = {"atomic_write_json": "io", "atomic_write_text": "io", "atomic_torch_save": "io", "read_json": "io",
          "FILE_MODE": "io", "LockedError": "locks", "exclusive_lock": "locks", "blocking_lock": "locks",
          "setup_logger": "logging", "set_console_level": "logging", "format_seconds": "logging",
          "Progress": "logging", "RunClock": "logging", "logger": "logging", "LOGGER_NAME": "logging",
          "set_random_seed": "runtime", "resolve_device": "runtime", "environment_info": "runtime"}


def __getattr__(name):
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"clip_convpass.utils.{_MOVED[name]}"), name)
    raise AttributeError(f"module 'clip_convpass.utils' has no attribute {name!r}")
