"""Module names from before the package had layers, kept working where users type them.

`python -m clip_convpass.grid ...` runs clip_convpass.experiments.grid as __main__, and
`import clip_convpass.report` gives clip_convpass.reporting: a finder on sys.meta_path maps each old
name below to its module. It answers only for these names; everything else is found as usual.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# old name -> (module an import gets, module `python -m` runs)
LEGACY_MODULES = {
    "attention": ("models.attention", None), "checkpoint": ("engine.checkpoint", None),
    "clip_loader": ("models.clip_loader", None), "compose": ("config.compose", None),
    "convpass": ("adapters.convpass", None), "demo": ("experiments.demo", None),
    "distributed": ("utils.distributed", None), "errors": ("utils.errors", None),
    "evaluation": ("engine.evaluation", None), "feature_cache": ("engine.feature_cache", None),
    "fewshot_report": ("reporting.fewshot", None), "grid": ("experiments.grid", None),
    "headinit": ("experiments.headinit", None), "heads": ("models.heads", None), "main": ("cli.command", None),
    "optim": ("engine.optim", None), "params": ("cli.params", None), "precision": ("engine.precision", None),
    "prompt_learner": ("models.prompt_learner", None), "prompts": ("models.prompts", None),
    "report": ("reporting", "cli.report"), "robustness": ("reporting.robustness", None),
    "rundir": ("engine.rundir", "cli.paths"), "sweep": ("experiments.sweep", None),
    "text_encoder": ("models.text_encoder", None), "trainer": ("engine.trainer", None),
    "wiseft": ("experiments.wiseft", None),
}
PACKAGE = __name__.rsplit(".", 1)[0]


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str, main_target: str):
        self.target, self.main_target = target, main_target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self.own_spec  # importlib put the alias's spec on the real module: give its own back

    def get_code(self, fullname):
        """What `python -m <old name>` executes: the new module run as __main__."""
        return compile(f"import runpy\nrunpy.run_module({self.main_target!r}, run_name='__main__', alter_sys=True)\n",
                       f"<{fullname}: alias of {self.main_target}>", "exec")

    def is_package(self, fullname):
        return False


class _LegacyFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.rpartition(".")
        if prefix != PACKAGE or name not in LEGACY_MODULES:
            return None
        module, main = LEGACY_MODULES[name]
        loader = _AliasLoader(f"{PACKAGE}.{module}", f"{PACKAGE}.{main or module}")
        return importlib.util.spec_from_loader(fullname, loader)


def install() -> None:
    if not any(isinstance(f, _LegacyFinder) for f in sys.meta_path):
        sys.meta_path.append(_LegacyFinder())
