"""PETL on CLIP: the Convpass_CLIP recipe (frozen image encoder, text-initialised head) with any
registered adapter, chosen by TRAINER.PETL.ADAPTER, to ask "is it the convolution, or any adapter?"."""
from yacs.config import CfgNode as CN

from clip_convpass.adapters.base import resolve
from clip_convpass.config import ConfigError, check
from clip_convpass.registry import TRAINER_REGISTRY
from clip_convpass.trainers.adapter_clip import AdapterCLIPTrainer, add_head_keys, check_head_keys


@TRAINER_REGISTRY.register
class PETLCLIP(AdapterCLIPTrainer):
    NAME = "PETLCLIP"
    CONFIG_NODE = "PETL"

    @classmethod
    def config_node(cls):
        c = CN()
        c.ADAPTER = "adaptformer"  # a registered adapter preset: python -m clip_convpass.params lists them
        # Options; 0 (or -1 where 0 is meaningful) keeps the adapter's own default (README "PETL on CLIP").
        c.HIDDEN = 0  # bottleneck width (convpass*, adaptformer, adapter)
        c.SCALE = 0.0  # s of the adapter's branch (convpass*, adaptformer, adapter, lora)
        c.DROPOUT = -1.0  # dropout inside the bottleneck
        c.LORA_RANK = 0
        c.VPT_LENGTH = -1  # prompt tokens per layer
        add_head_keys(c)
        return c

    @classmethod
    def overrides(cls, c) -> dict:
        given = {"hidden": c.HIDDEN > 0, "scale": c.SCALE != 0.0, "dropout": c.DROPOUT >= 0,
                 "rank": c.LORA_RANK > 0, "length": c.VPT_LENGTH >= 0}
        values = {"hidden": c.HIDDEN, "scale": c.SCALE, "dropout": c.DROPOUT, "rank": c.LORA_RANK,
                  "length": c.VPT_LENGTH}
        return {k: values[k] for k, on in given.items() if on}

    @classmethod
    def check_config(cls, cfg):
        c = cfg.TRAINER.PETL
        check_head_keys(c, "PETL")
        check(c.HIDDEN >= 0, f"TRAINER.PETL.HIDDEN must be >= 0 (0: the adapter's default), got {c.HIDDEN}")
        check(c.DROPOUT < 1, f"TRAINER.PETL.DROPOUT must be < 1, got {c.DROPOUT}")
        check(c.LORA_RANK >= 0, f"TRAINER.PETL.LORA_RANK must be >= 0 (0: default), got {c.LORA_RANK}")
        check(c.VPT_LENGTH >= -1, f"TRAINER.PETL.VPT_LENGTH must be >= -1 (-1: default), got {c.VPT_LENGTH}")
        try:
            resolve(c.ADAPTER, cls.overrides(c))
        except ConfigError as e:
            raise ConfigError(f"TRAINER.PETL.ADAPTER: {e}") from e
        except ValueError as e:
            raise ConfigError(f"TRAINER.PETL.{e}") from e

    def adapter(self):
        c = self.cfg.TRAINER.PETL
        return c.ADAPTER, self.overrides(c)
