"""PETL on CLIP: the Convpass_CLIP recipe (frozen image encoder, text-initialised head) with any
registered adapter, chosen by TRAINER.PETL.ADAPTER, to ask "is it the convolution, or any adapter?"."""
from typing import Dict, List

from yacs.config import CfgNode as CN

from clip_convpass.adapters.base import resolve
from clip_convpass.config import ConfigError, check
from clip_convpass.registry import ADAPTER_REGISTRY, TRAINER_REGISTRY
from clip_convpass.trainers.adapter_clip import NO_ADAPTER, AdapterCLIPTrainer, add_head_keys, check_head_keys

# The five keys PETLCLIP had before its node came from the adapters: a stored config with their old
# "keep the preset's value" settings still means that.
LEGACY_UNSET = {"HIDDEN": 0, "SCALE": 0.0, "DROPOUT": -1.0, "LORA_RANK": 0, "VPT_LENGTH": -1}


def option_keys() -> Dict[str, List[str]]:
    """{config key: the adapter kinds having that option} over every registered adapter kind."""
    keys: Dict[str, List[str]] = {}
    for kind in ADAPTER_REGISTRY.classes():
        for option in kind.OPTIONS:
            keys.setdefault(kind.config_key(option), []).append(kind.NAME)
    return keys


@TRAINER_REGISTRY.register
class PETLCLIP(AdapterCLIPTrainer):
    NAME = "PETLCLIP"
    CONFIG_NODE = "PETL"

    @classmethod
    def config_node(cls):
        c = CN()
        # a registered adapter preset (python -m clip_convpass.params lists them), or none: nothing injected (the head
        # alone trains: Linear; with BACKBONE_TRAINABLE: Full)
        c.ADAPTER = "adaptformer"
        # One key per option of every registered adapter kind (AdapterKind.OPTIONS, AdapterKind.config_key);
        # None keeps the preset's value, and an option the chosen adapter does not have is refused.
        for key in sorted(option_keys()):
            c[key] = None
        add_head_keys(c)
        return c

    @classmethod
    def overrides(cls, c) -> dict:
        """{option: value} of the chosen adapter's options that the config sets; refuses any other set key."""
        given = {k: c[k] for k in option_keys() if c[k] is not None and LEGACY_UNSET.get(k, object()) != c[k]}
        if c.ADAPTER == NO_ADAPTER:
            if given:
                raise ConfigError(f"TRAINER.PETL.{sorted(given)[0]} is an adapter option, and ADAPTER is none; leave it unset")
            return {}
        kind = resolve(c.ADAPTER)[0]
        own = {kind.config_key(o): o for o in kind.OPTIONS}
        foreign = sorted(set(given) - set(own))
        if foreign:
            raise ConfigError(f"TRAINER.PETL.{foreign[0]} is not an option of adapter {c.ADAPTER!r} (its options: "
                              f"{', '.join(sorted(own)) or 'none'}); leave it unset")
        out = {}
        for key, value in given.items():
            default = kind.OPTIONS[own[key]]
            out[own[key]] = float(value) if isinstance(default, float) and isinstance(value, int) else value
        return out

    @classmethod
    def check_config(cls, cfg):
        c = cfg.TRAINER.PETL
        check_head_keys(c, "PETL")
        if c.ADAPTER == NO_ADAPTER:
            cls.overrides(c)
            check(c.HEAD_TRAINABLE or c.BACKBONE_TRAINABLE, "TRAINER.PETL: ADAPTER none with a frozen head and a frozen "
                                                              "backbone: nothing would train")
            return
        try:
            resolve(c.ADAPTER, cls.overrides(c))
        except ConfigError as e:
            raise e if str(e).startswith("TRAINER.PETL.") else ConfigError(f"TRAINER.PETL.ADAPTER: {e}") from e
        except (ValueError, TypeError) as e:
            raise ConfigError(f"TRAINER.PETL.{e}") from e

    def adapter(self):
        c = self.cfg.TRAINER.PETL
        return c.ADAPTER, self.overrides(c)
