"""Running one experiment: the trainer base and its hooks, checkpoints, evaluation, the feature cache,
optimisers, precision, run directories, and one run (run.py)."""

_API = ("run", "build_trainer")


def __getattr__(name):  # `from clip_convpass.engine import run` as before; imported on first use
    if name in _API:
        from clip_convpass.engine import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'clip_convpass.engine' has no attribute {name!r}")
