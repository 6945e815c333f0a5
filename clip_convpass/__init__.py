"""clip-convpass: parameter-efficient transfer and generalization of CLIP (Convpass_CLIP and baselines).

Layers, bottom to top (each imports only from those below; docs/ARCHITECTURE.md): utils, registry, config
-> models, data -> engine -> adapters -> trainers, datasets (plugins) -> reporting -> experiments -> cli.

    from clip_convpass import setup_cfg, run, build_trainer
"""
from clip_convpass import legacy

legacy.install()

_API = {"setup_cfg": "clip_convpass.config", "run": "clip_convpass.engine.runner",
        "build_trainer": "clip_convpass.engine.runner"}


def __getattr__(name):  # the API is imported on first use: `import clip_convpass` stays light
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'clip_convpass' has no attribute {name!r}")


__all__ = list(_API)
