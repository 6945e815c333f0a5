"""Convpass_CLIP: convolutional bypasses in CLIP's image encoder + a head initialised from text."""
from yacs.config import CfgNode as CN

from clip_convpass.adapters.convpass import ConvpassAdapter, ConvpassSpec
from clip_convpass.config import ConfigError, check
from clip_convpass.registry import TRAINER_REGISTRY
from clip_convpass.trainers.adapter_clip import AdapterCLIPTrainer, add_head_keys, check_head_keys


@TRAINER_REGISTRY.register
class ConvpassCLIP(AdapterCLIPTrainer):
    NAME = "ConvpassCLIP"
    CONFIG_NODE = "CONVPASS"

    @classmethod
    def config_node(cls):
        """README "Convpass_CLIP choices" documents every key."""
        c = CN()
        c.HIDDEN = 8
        # s in x + Attn(LN(x)) + s * Convpass(LN(x)); pick it on VAL_SHOTS with `python -m clip_convpass.sweep`.
        c.SCALE = 1.0
        c.KERNEL_SIZE = 3  # 3, or 1 for the "language-oriented" 1x1 ablation
        c.ATTN_KERNEL_SIZE = 0  # the kernel beside attention / beside the MLP alone (0: KERNEL_SIZE; Table 5)
        c.MLP_KERNEL_SIZE = 0
        c.DROPOUT = 0.1
        c.CONV_INIT = "identity"  # identity (centre tap) | xavier
        c.POSITIONS = "both"  # both | attn | mlp | none (no bypasses: head-only probe)
        c.MODE = "parallel"  # parallel | sequential
        c.SHARE = False  # Convpass_share
        add_head_keys(c)
        return c

    @classmethod
    def check_config(cls, cfg):
        c = cfg.TRAINER.CONVPASS
        try:
            ConvpassSpec.from_cfg(c)
        except ValueError as e:
            raise ConfigError(f"TRAINER.CONVPASS.{e}") from e
        check_head_keys(c, "CONVPASS")
        check(c.POSITIONS != "none" or c.HEAD_TRAINABLE,
              "TRAINER.CONVPASS: POSITIONS none (no bypasses) with a frozen head: nothing would train; that is "
              "zero-shot CLIP (ZeroShotCLIP), or make the head trainable")
        check(0 <= c.DROPOUT < 1, f"TRAINER.CONVPASS.DROPOUT must be in [0, 1), got {c.DROPOUT}")

    def adapter(self):
        c = self.cfg.TRAINER.CONVPASS
        spec = ConvpassSpec.from_cfg(c)
        return "convpass", {k: getattr(spec, k) for k in ConvpassAdapter.OPTIONS}
