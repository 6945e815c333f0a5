"""All configuration defaults, in one place.

Merge order (later wins): these defaults -> dataset YAML -> method YAML -> command-line opts.
A YAML file may name another with ``_BASE_: relative/path.yaml``; the base is merged first, so
variants of a method config need only list what differs.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

import yaml
from yacs.config import CfgNode as CN

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

_C = CN()
_C.OUTPUT_DIR = "./output"
_C.SEED = 1
# fp32 | amp (fp16 autocast on CUDA, bf16 autocast on CPU) | bf16
_C.PREC = "fp32"
# auto | cpu | cuda | cuda:N
_C.DEVICE = "auto"
# Label for this configuration in result files and tables (default: the trainer name).
_C.NAME = ""

_C.DATASET = CN()
_C.DATASET.ROOT = ""
_C.DATASET.NAME = "ImageNet"
_C.DATASET.NUM_SHOTS = 16
# Disjoint per-class validation shots, drawn from the training split, for hyper-parameter selection.
_C.DATASET.VAL_SHOTS = 4
# all | base | new (class subsets as in CoCoOp's base-to-new protocol)
_C.DATASET.SUBSAMPLE = "all"
# Text file with the wnids of the class universe (sorted = class index). "" = the 1000 ImageNet wnids.
_C.DATASET.CLASS_LIST = ""
# Where few-shot split JSON files go. "" = <ROOT>/<dataset dir>/split_fewshot
_C.DATASET.SPLIT_DIR = ""
# Skip (and count) unreadable images instead of failing on the first one.
_C.DATASET.SKIP_BAD_IMAGES = False
# If a class has fewer images than NUM_SHOTS + VAL_SHOTS: error (False) or use what there is, warned (True).
_C.DATASET.ALLOW_FEWER_SHOTS = False

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
_C.DATALOADER.TRAIN_X = CN()
_C.DATALOADER.TRAIN_X.BATCH_SIZE = 32
_C.DATALOADER.TEST = CN()
_C.DATALOADER.TEST.BATCH_SIZE = 100

_C.INPUT = CN()
_C.INPUT.SIZE = (224, 224)
_C.INPUT.INTERPOLATION = "bicubic"
# Training transforms, in order. Choices: random_resized_crop, random_flip, resize, center_crop, normalize
_C.INPUT.TRANSFORMS = ["random_resized_crop", "random_flip", "normalize"]
_C.INPUT.TEST_TRANSFORMS = ["resize", "center_crop", "normalize"]
_C.INPUT.CROP_SCALE = (0.08, 1.0)
_C.INPUT.PIXEL_MEAN = CLIP_MEAN
_C.INPUT.PIXEL_STD = CLIP_STD

_C.OPTIM = CN()
_C.OPTIM.NAME = "sgd"  # sgd | adam | adamw
_C.OPTIM.LR = 0.002
_C.OPTIM.WEIGHT_DECAY = 5e-4
_C.OPTIM.MOMENTUM = 0.9
_C.OPTIM.ADAM_BETA1 = 0.9
_C.OPTIM.ADAM_BETA2 = 0.999
_C.OPTIM.EPS = 1e-8
_C.OPTIM.MAX_EPOCH = 10
_C.OPTIM.LR_SCHEDULER = "cosine"  # cosine | step | constant
_C.OPTIM.STEPSIZE = (5,)
_C.OPTIM.GAMMA = 0.1
_C.OPTIM.WARMUP_EPOCH = 0
_C.OPTIM.WARMUP_TYPE = "constant"  # constant | linear
_C.OPTIM.WARMUP_CONS_LR = 1e-5
_C.OPTIM.WARMUP_MIN_LR = 1e-5

_C.TRAIN = CN()
_C.TRAIN.PRINT_FREQ = 10
# Save a checkpoint every N epochs (the last epoch is always saved).
_C.TRAIN.CHECKPOINT_FREQ = 1
# How many epoch checkpoints to keep on disk (oldest are removed after a newer one is safely written).
_C.TRAIN.KEEP_CHECKPOINTS = 1

_C.TEST = CN()
_C.TEST.PER_CLASS_RESULT = False
# Evaluate on the training dataset's test split at the end of training.
_C.TEST.AFTER_TRAIN = True
_C.TEST.SPLIT = "test"  # test | val
# Frozen-encoder methods read/write evaluation features here ("" = no cache). The grid and demo set it.
_C.TEST.FEATURE_CACHE_DIR = ""
# native: store features as computed (cached == uncached metrics, exactly); fp16: half the disk
_C.TEST.FEATURE_CACHE_DTYPE = "native"

_C.MODEL = CN()
# Any open_clip model name (see open_clip.list_models()), e.g. ViT-B-16-quickgelu for OpenAI weights.
_C.MODEL.BACKBONE = "ViT-B-16-quickgelu"
# An open_clip pretrained tag (e.g. "openai"), a path to a local checkpoint file, or "none" (random init).
_C.MODEL.PRETRAINED = "openai"
# Where open_clip looks for / caches downloaded weights ("" = open_clip's default).
_C.MODEL.CACHE_DIR = ""
# Run the text encoder only up to the longest prompt's EOT (exact; False = always 77 positions).
_C.MODEL.TEXT_TRUNCATE = True
# Prompt learners: compute the [SOS] + context positions shared by all classes once (exact).
_C.MODEL.TEXT_SHARED_PREFIX = True

_C.TRAINER = CN()
_C.TRAINER.NAME = "ZeroShotCLIP"

_C.TRAINER.ZSCLIP = CN()
# single | ensemble7 | ensemble80 (open_clip.zero_shot_metadata)
_C.TRAINER.ZSCLIP.TEMPLATES = "single"

# Convpass_CLIP (trainers/convpass_clip.py); see README "Convpass_CLIP choices".
_C.TRAINER.CONVPASS = CN()
_C.TRAINER.CONVPASS.HIDDEN = 8
# s in x + Attn(LN(x)) + s * Convpass(LN(x)); pick it on VAL_SHOTS with `python -m clip_convpass.sweep`.
_C.TRAINER.CONVPASS.SCALE = 1.0
_C.TRAINER.CONVPASS.KERNEL_SIZE = 3  # 3, or 1 for the "language-oriented" 1x1 ablation
_C.TRAINER.CONVPASS.DROPOUT = 0.1
_C.TRAINER.CONVPASS.CONV_INIT = "identity"  # identity (centre tap) | xavier
_C.TRAINER.CONVPASS.POSITIONS = "both"  # both | attn | mlp | none (no bypasses: head-only probe)
_C.TRAINER.CONVPASS.MODE = "parallel"  # parallel | sequential
_C.TRAINER.CONVPASS.SHARE = False  # Convpass_share
# Same attention math on contiguous batch-first tensors (faster training on CPU and GPU; False = open_clip's MHA call).
_C.TRAINER.CONVPASS.FAST_ATTENTION = True
_C.TRAINER.CONVPASS.TEMPLATES = "single"  # head init text: single | ensemble7 | ensemble80
_C.TRAINER.CONVPASS.HEAD_INIT = "text"  # text | random | zero
_C.TRAINER.CONVPASS.HEAD_TRAINABLE = True

# CoOp (trainers/coop.py)
_C.TRAINER.COOP = CN()
_C.TRAINER.COOP.N_CTX = 16
_C.TRAINER.COOP.CTX_INIT = ""  # e.g. "a photo of a" (then N_CTX = its token count)
_C.TRAINER.COOP.CSC = False  # class-specific contexts
_C.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"  # end | middle | front
_C.TRAINER.COOP.INIT_STD = 0.02

# CoCoOp (trainers/cocoop.py)
_C.TRAINER.COCOOP = CN()
_C.TRAINER.COCOOP.N_CTX = 4
_C.TRAINER.COCOOP.CTX_INIT = "a photo of a"
_C.TRAINER.COCOOP.INIT_STD = 0.02
# Evaluation runs the text encoder on (images x classes) prompts; at most this many per call.
_C.TRAINER.COCOOP.PROMPTS_PER_CHUNK = 1000

# Tip-Adapter and Tip-Adapter-F (trainers/tip_adapter.py)
_C.TRAINER.TIP = CN()
_C.TRAINER.TIP.TEMPLATES = "ensemble7"
_C.TRAINER.TIP.AUGMENT_EPOCH = 10
_C.TRAINER.TIP.CROP_SCALE = (0.5, 1.0)
_C.TRAINER.TIP.INIT_ALPHA = 1.0
_C.TRAINER.TIP.INIT_BETA = 1.0
# alpha, beta are searched on the VAL_SHOTS split (never on test data) over these ranges.
_C.TRAINER.TIP.SEARCH = True
_C.TRAINER.TIP.ALPHA_RANGE = (0.1, 3.0)
_C.TRAINER.TIP.BETA_RANGE = (0.1, 7.0)
_C.TRAINER.TIP.ALPHA_STEPS = 20
_C.TRAINER.TIP.BETA_STEPS = 200

# Linear-probe CLIP (trainers/linear_probe.py)
_C.TRAINER.LINEAR_PROBE = CN()
# Inverse L2 strength C (scikit-learn's convention): coarse grid, then a finer grid around the best.
_C.TRAINER.LINEAR_PROBE.C_GRID = (1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4, 1e6)
_C.TRAINER.LINEAR_PROBE.REFINE_POINTS = 9  # log-spaced points between the best C's neighbours
_C.TRAINER.LINEAR_PROBE.MAX_ITER = 1000
_C.TRAINER.LINEAR_PROBE.NORMALIZE = True  # L2-normalise features (as every other method's head does)

VALID_PREC = ("fp32", "amp", "bf16")
VALID_OPTIM = ("sgd", "adam", "adamw")
VALID_SCHED = ("cosine", "step", "constant")
VALID_WARMUP = ("constant", "linear")
VALID_TRANSFORMS = ("random_resized_crop", "random_flip", "resize", "center_crop", "normalize")


class ConfigError(ValueError):
    """A configuration file or value is invalid."""


def get_cfg_default() -> CN:
    return _C.clone()


def _load_yaml_chain(path: Path, seen: Optional[set] = None) -> list[Path]:
    """Return [base, ..., path] following ``_BASE_`` links."""
    seen = seen or set()
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}")
    if path in seen:
        raise ConfigError(f"Circular _BASE_ reference at {path}")
    seen.add(path)
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of keys, got {type(data).__name__}")
    base = data.get("_BASE_")
    chain = _load_yaml_chain(path.parent / base, seen) if base else []
    return chain + [path]


def _int_to_float(default, value):
    """`SCALE: 10` for a float key is what the user means; yacs would reject it as a type change."""
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _coerce_tree(defaults: CN, data: dict) -> dict:
    out = {}
    for k, v in data.items():
        d = defaults.get(k) if isinstance(defaults, CN) else None
        out[k] = _coerce_tree(d, v) if isinstance(v, dict) and isinstance(d, CN) else _int_to_float(d, v)
    return out


def merge_config_file(cfg: CN, path: str | os.PathLike) -> None:
    for p in _load_yaml_chain(Path(path)):
        with open(p) as f:
            data = yaml.safe_load(f) or {}
        data.pop("_BASE_", None)
        data = _coerce_tree(cfg, data)
        try:
            cfg.merge_from_other_cfg(CN(data))
        except KeyError as e:
            raise ConfigError(f"{p}: {e.args[0]} (see clip_convpass/config.py for the valid keys)") from e
        except ValueError as e:
            raise ConfigError(f"{p}: {e}") from e


def merge_opts(cfg: CN, opts: Sequence[str]) -> None:
    if len(opts) % 2:
        raise ConfigError(f"Command-line opts must be KEY VALUE pairs, got an odd number: {list(opts)}")
    opts = list(opts)
    for i in range(0, len(opts), 2):
        node, *path = [cfg] + opts[i].split(".")
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, CN) else None
        default = node.get(path[-1]) if isinstance(node, CN) else None
        if isinstance(default, float) and isinstance(opts[i + 1], str):
            try:
                opts[i + 1] = str(float(opts[i + 1]))
            except ValueError:
                pass  # not a number: yacs reports the type mismatch with the key named
    try:
        cfg.merge_from_list(opts)
    except (KeyError, AssertionError) as e:
        raise ConfigError(f"Command-line opts: {e.args[0] if e.args else e}") from e
    except ValueError as e:
        raise ConfigError(f"Command-line opts: {e}") from e


def setup_cfg(
    dataset_config_file: str | os.PathLike | None = None,
    config_file: str | os.PathLike | None = None,
    opts: Iterable[str] = (),
    freeze: bool = True,
) -> CN:
    """Build a config: defaults -> dataset file -> method file -> opts, then validate."""
    cfg = get_cfg_default()
    if dataset_config_file:
        merge_config_file(cfg, dataset_config_file)
    if config_file:
        merge_config_file(cfg, config_file)
    merge_opts(cfg, list(opts))
    validate_cfg(cfg)
    if freeze:
        cfg.freeze()
    return cfg


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate_cfg(cfg: CN) -> None:
    """Reject invalid values before any work starts."""
    from .prompts import TEMPLATE_SETS  # local import: prompts imports open_clip

    _check(cfg.PREC in VALID_PREC, f"PREC must be one of {VALID_PREC}, got {cfg.PREC!r}")
    _check(cfg.OPTIM.NAME.lower() in VALID_OPTIM, f"OPTIM.NAME must be one of {VALID_OPTIM}, got {cfg.OPTIM.NAME!r}")
    _check(cfg.OPTIM.LR > 0, f"OPTIM.LR must be > 0, got {cfg.OPTIM.LR}")
    _check(cfg.OPTIM.WEIGHT_DECAY >= 0, f"OPTIM.WEIGHT_DECAY must be >= 0, got {cfg.OPTIM.WEIGHT_DECAY}")
    _check(cfg.OPTIM.MAX_EPOCH >= 0, f"OPTIM.MAX_EPOCH must be >= 0, got {cfg.OPTIM.MAX_EPOCH}")
    _check(cfg.OPTIM.LR_SCHEDULER in VALID_SCHED,
           f"OPTIM.LR_SCHEDULER must be one of {VALID_SCHED}, got {cfg.OPTIM.LR_SCHEDULER!r}")
    _check(cfg.OPTIM.WARMUP_TYPE in VALID_WARMUP,
           f"OPTIM.WARMUP_TYPE must be one of {VALID_WARMUP}, got {cfg.OPTIM.WARMUP_TYPE!r}")
    _check(cfg.OPTIM.WARMUP_EPOCH >= 0, "OPTIM.WARMUP_EPOCH must be >= 0")
    _check(cfg.DATASET.NUM_SHOTS >= 0, f"DATASET.NUM_SHOTS must be >= 0, got {cfg.DATASET.NUM_SHOTS}")
    _check(cfg.DATASET.VAL_SHOTS >= 0, f"DATASET.VAL_SHOTS must be >= 0, got {cfg.DATASET.VAL_SHOTS}")
    _check(cfg.DATASET.SUBSAMPLE in ("all", "base", "new"),
           f"DATASET.SUBSAMPLE must be all|base|new, got {cfg.DATASET.SUBSAMPLE!r}")
    _check(cfg.DATALOADER.TRAIN_X.BATCH_SIZE > 0, "DATALOADER.TRAIN_X.BATCH_SIZE must be > 0")
    _check(cfg.DATALOADER.TEST.BATCH_SIZE > 0, "DATALOADER.TEST.BATCH_SIZE must be > 0")
    _check(cfg.DATALOADER.NUM_WORKERS >= 0, "DATALOADER.NUM_WORKERS must be >= 0")
    _check(cfg.TRAIN.CHECKPOINT_FREQ >= 1, "TRAIN.CHECKPOINT_FREQ must be >= 1")
    _check(cfg.TRAIN.KEEP_CHECKPOINTS >= 1, "TRAIN.KEEP_CHECKPOINTS must be >= 1")
    _check(cfg.TEST.SPLIT in ("test", "val"), f"TEST.SPLIT must be test|val, got {cfg.TEST.SPLIT!r}")
    _check(cfg.TEST.FEATURE_CACHE_DTYPE in ("native", "fp16"),
           f"TEST.FEATURE_CACHE_DTYPE must be native|fp16, got {cfg.TEST.FEATURE_CACHE_DTYPE!r}")
    _check(len(cfg.INPUT.SIZE) == 2, f"INPUT.SIZE must be (height, width), got {cfg.INPUT.SIZE}")
    _check(cfg.INPUT.INTERPOLATION in ("bicubic", "bilinear", "nearest"),
           f"INPUT.INTERPOLATION must be bicubic|bilinear|nearest, got {cfg.INPUT.INTERPOLATION!r}")
    for t in list(cfg.INPUT.TRANSFORMS) + list(cfg.INPUT.TEST_TRANSFORMS):
        _check(t in VALID_TRANSFORMS, f"Unknown transform {t!r}; choices: {VALID_TRANSFORMS}")
    _check(cfg.TRAINER.ZSCLIP.TEMPLATES in TEMPLATE_SETS,
           f"TRAINER.ZSCLIP.TEMPLATES must be one of {sorted(TEMPLATE_SETS)}, got {cfg.TRAINER.ZSCLIP.TEMPLATES!r}")
    from .registry import TRAINER_REGISTRY

    _check(cfg.TRAINER.NAME in TRAINER_REGISTRY,
           f"Unknown TRAINER.NAME {cfg.TRAINER.NAME!r}; registered: {TRAINER_REGISTRY.names()}")
    for hook in _VALIDATORS:
        hook(cfg)


_VALIDATORS = []


def register_validator(fn):
    """Methods add checks of their own TRAINER.<METHOD> keys here."""
    _VALIDATORS.append(fn)
    return fn


def config_hash(cfg: CN) -> str:
    """Hash of everything that determines a result (not where it is written)."""
    c = cfg.clone()
    c.defrost()
    c.OUTPUT_DIR = ""
    c.DATASET.ROOT = ""
    c.DATALOADER.NUM_WORKERS = 0
    return hashlib.sha256(c.dump().encode()).hexdigest()[:16]
