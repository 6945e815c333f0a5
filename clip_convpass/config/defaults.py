"""The engine's configuration: its keys and defaults, YAML merging, validation of engine keys, hashing.

Methods own their TRAINER.<NODE> keys (see clip_convpass.config.compose, which assembles a run's config).
Merge order (later wins): defaults -> dataset YAML -> method YAML -> override YAMLs -> command-line opts.
A YAML file may name another with ``_BASE_: relative/path.yaml``; the base is merged first, so
variants of a method config need only list what differs.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import yaml
from yacs.config import CfgNode as CN

from clip_convpass.utils.errors import UserError
from clip_convpass.utils.io import load_yaml
from clip_convpass.utils.paths import CONFIG_DIR


class Config(CN):
    """The root configuration node: yacs's, with dump() writing the same text through libyaml's emitter (ten
    times faster; a run dumps its configuration several times: hash, log, config.yaml, checkpoint).
    tests/config checks the text is yacs's own for every shipped configuration."""

    def dump(self, **kwargs) -> str:
        if kwargs or not yaml.__with_libyaml__:
            return super().dump(**kwargs)
        # The text of the last dump is reused while the tree is equal to the one it was made from (compared in
        # full: yacs lets merges and child nodes change even a frozen configuration); the tree is cheap, the
        # YAML representer is not.
        tree = _as_dict(self)
        last = self.__dict__.get("_dumped")
        if last is not None and last[0] == tree:
            return last[1]
        text = yaml.dump(tree, Dumper=yaml.CSafeDumper)
        self.__dict__["_dumped"] = (copy.deepcopy(tree), text)
        return text

    @classmethod
    def _decode_cfg_value(cls, value):  # merged nodes stay yacs's own type (yacs makes them of the root's class)
        return CN._decode_cfg_value(value)


def _as_dict(node):
    return {k: _as_dict(v) for k, v in node.items()} if isinstance(node, CN) else node


CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

_C = Config()
_C.OUTPUT_DIR = "./output"
_C.SEED = 1
# auto (fp16 autocast + GradScaler + TF32 on CUDA, fp32 on CPU) | fp32 | amp (fp16 on CUDA, bf16 on CPU) | bf16
_C.PREC = "auto"
# auto | cpu | cuda | cuda:N
_C.DEVICE = "auto"
# Label for this configuration in result files and tables (default: the trainer name).
_C.NAME = ""

_C.DATASET = CN()
_C.DATASET.ROOT = ""
_C.DATASET.NAME = "ImageNet"
_C.DATASET.NUM_SHOTS = 16
# Disjoint per-class validation shots, drawn from the training split, for hyper-parameter selection.
# -1: min(NUM_SHOTS, 4), CoOp's lpclip schedule {1: 1, 2: 2, 4: 4, 8: 4, 16: 4}.
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
# per_class: each class's shots drawn by an RNG seeded by (SEED, class) (independent of file order and of the
# other classes); coop: CoOp/Dassl's draw (random.seed(SEED), then random.sample per label in split-file order,
# train then val), which gives CoOp's exact shots on its split-file datasets.
_C.DATASET.FEWSHOT_SAMPLER = "per_class"

_C.DATALOADER = CN()
# -1: as many as the machine gives this process (cores, at most 8); results never depend on it.
_C.DATALOADER.NUM_WORKERS = -1
_C.DATALOADER.TRAIN_X = CN()
_C.DATALOADER.TRAIN_X.BATCH_SIZE = 32
# Drop each epoch's last, incomplete training batch (PETL-ViT and NOAH: 1,000 VTAB images at 64 = 15 steps).
_C.DATALOADER.TRAIN_X.DROP_LAST = False
_C.DATALOADER.TEST = CN()
_C.DATALOADER.TEST.BATCH_SIZE = 100

_C.INPUT = CN()
_C.INPUT.SIZE = (224, 224)
_C.INPUT.INTERPOLATION = "bicubic"
# Training transforms, in order. Choices: random_resized_crop, random_flip, resize (shorter side),
# resize_square (to exactly SIZE), center_crop, color_jitter, rand_augment, normalize, random_erasing. The default
# test transform is CLIP's, CoOp's and Dassl's (resize + centre crop, CLIP mean/std);
# configs/overrides/paper_preprocessing.yaml gives the paper's wording ("resize to 224x224", ImageNet mean/std).
_C.INPUT.TRANSFORMS = ["random_resized_crop", "random_flip", "normalize"]
_C.INPUT.TEST_TRANSFORMS = ["resize", "center_crop", "normalize"]
_C.INPUT.CROP_SCALE = (0.08, 1.0)
# The size "resize" / "resize_square" resize to before a centre crop (NOAH's few-shot test: 256, then crop 224);
# 0 = INPUT.SIZE.
_C.INPUT.RESIZE_SIZE = 0
# rand_augment: timm's RandAugment policy string (NOAH's "rand-m9-mstd0.5-inc1"), with timm's parameters for
# the crop size and PIXEL_MEAN; random_erasing (after normalize): its probability, timm's pixel mode, one box.
_C.INPUT.RAND_AUGMENT = "rand-m9-mstd0.5-inc1"
_C.INPUT.RANDOM_ERASING = 0.25
# color_jitter: brightness / contrast / saturation strength (timm's 0.4). The Convpass paper names colour jitter for
# few-shot training, but NOAH's code never applies it (timm skips it when RandAugment is on), so the few-shot recipe
# leaves it out; add "color_jitter" before rand_augment in INPUT.TRANSFORMS for the paper's wording.
_C.INPUT.COLOR_JITTER = 0.4
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
# A method's per-shot schedule, "shots:epochs,..." (e.g. CoOp's "1:50,2:100,4:100,8:200,16:200"): MAX_EPOCH is
# the entry of the largest shot count <= DATASET.NUM_SHOTS. "" = MAX_EPOCH at every shot count.
_C.OPTIM.MAX_EPOCH_BY_SHOTS = ""
# Training datasets that keep MAX_EPOCH at every shot count (CoOp: ImageNet, 50 epochs).
_C.OPTIM.MAX_EPOCH_BY_SHOTS_EXCEPT = []
# An iteration budget instead (CLIP-LoRA: 500): ITERS_PER_SHOT x DATASET.NUM_SHOTS iterations, in as many epochs as
# that takes (the last one cut at the budget; MAX_EPOCH, if smaller, still ends training first) and with the
# schedule running over the budget's iterations (needs SCHEDULER_UNIT iteration). 0 = epochs only.
_C.OPTIM.ITERS_PER_SHOT = 0
_C.OPTIM.LR_SCHEDULER = "cosine"  # cosine | step | constant
# Where the cosine ends (torch's eta_min; CLIP-LoRA 1e-6; Dassl and CoOp 0).
_C.OPTIM.MIN_LR = 0.0
# Step the schedule once per epoch (Dassl / CoOp) or after every iteration (Tip-Adapter-F's reference).
_C.OPTIM.SCHEDULER_UNIT = "epoch"  # epoch | iteration
_C.OPTIM.STEPSIZE = (5,)
_C.OPTIM.GAMMA = 0.1
_C.OPTIM.WARMUP_EPOCH = 0
_C.OPTIM.WARMUP_TYPE = "constant"  # constant | linear
_C.OPTIM.WARMUP_CONS_LR = 1e-5
_C.OPTIM.WARMUP_MIN_LR = 1e-5
# True: the main schedule starts after the warm-up (Dassl); False: it counts from epoch 0 and the warm-up replaces
# its first epochs (timm's CosineLRScheduler, warmup_prefix=False: PETL-ViT, NOAH).
_C.OPTIM.WARMUP_PREFIX = True
# Epoch e trains at the schedule's value for epoch e - SCHEDULE_LAG (the first epochs at its value for 0): PETL-ViT
# and NOAH call timm's scheduler.step(epoch) after each epoch, so they train one epoch behind (1). Epoch unit only.
_C.OPTIM.SCHEDULE_LAG = 0

_C.TRAIN = CN()
_C.TRAIN.PRINT_FREQ = 10
# Batch mixing and soft targets (timm's Mixup, NOAH's few-shot recipe: 0.8, 1.0, 0.1): mixup / cutmix alphas (0 =
# off; both on: one of the two per batch, at even odds) and label smoothing of the targets. Methods with their
# own loss refuse them.
_C.TRAIN.MIXUP = 0.0
_C.TRAIN.CUTMIX = 0.0
_C.TRAIN.LABEL_SMOOTHING = 0.0
# Save a checkpoint every N epochs (the last epoch is always saved).
_C.TRAIN.CHECKPOINT_FREQ = 1
# ...but skip an epoch's checkpoint while the last one is younger than this many seconds (runs of many short
# epochs would otherwise spend more time writing checkpoints than training). A resumed run repeats the epochs
# after its last checkpoint exactly, so the cadence never changes results; a kill loses at most this much work
# beyond the current epoch. 0: every CHECKPOINT_FREQ epochs; so is KEEP_CHECKPOINTS > 1 (those checkpoints are
# asked for).
_C.TRAIN.CHECKPOINT_MIN_SECONDS = 30.0
# How many epoch checkpoints to keep on disk (oldest are removed after a newer one is safely written).
_C.TRAIN.KEEP_CHECKPOINTS = 1
# Also write each epoch's scalars for TensorBoard (<run>/tensorboard/; needs `pip install tensorboard`).
# train_history.json and train_history.csv are always written.
_C.TRAIN.TENSORBOARD = False

_C.TEST = CN()
_C.TEST.PER_CLASS_RESULT = False
# Evaluate on the training dataset's test split at the end of training.
_C.TEST.AFTER_TRAIN = True
_C.TEST.SPLIT = "test"  # test | val
# Also score the model on TEST.SPLIT every N epochs during training and write it into the run's history
# (`<split>_top1`), never into results.json, which holds the final model's. PETL-ViT's VTAB scripts report the
# best of these every 10 epochs; the history lets that difference be measured. 0 = off.
_C.TEST.MONITOR_EVERY = 0
# Frozen-encoder methods read/write evaluation features here ("" = no cache). The grid and demo set it.
_C.TEST.FEATURE_CACHE_DIR = ""
# native: store features as computed (cached == uncached metrics, exactly); fp16: half the disk
_C.TEST.FEATURE_CACHE_DTYPE = "native"

_C.MODEL = CN()
# Any open_clip model name (see open_clip.list_models()), e.g. ViT-B-16-quickgelu for OpenAI weights; or
# timm:<a timm ViT> (e.g. timm:vit_base_patch16_224), an image-only supervised backbone for the adapter trainers
# (ConvpassCLIP, PETLCLIP: adapters + a linear head on its features; models/timm_backbone.py).
_C.MODEL.BACKBONE = "ViT-B-16-quickgelu"
# An open_clip pretrained tag (e.g. "openai"), a path to a local checkpoint file, or "none" (random init); for
# timm: a timm tag (e.g. augreg_in21k), a local .npz (Google's ViT-B_16.npz) / .pth / .safetensors, or none.
_C.MODEL.PRETRAINED = "openai"
# Stochastic depth of a timm backbone's blocks, on its branches and on the adapters beside them as PETL-ViT does
# (its VTAB recipe: 0.1). open_clip's towers have none.
_C.MODEL.DROP_PATH_RATE = 0.0
# timm: keep a checkpoint's representation layer (Linear + tanh before the head: Google's ImageNet-21K .npz has one,
# and timm 0.4.12 kept it frozen for PETL-ViT, NOAH and VPT) | drop it (current timm's loading)
_C.MODEL.PRE_LOGITS = "keep"
# An open_clip model-config JSON registered under MODEL.BACKBONE (a custom architecture; "" = none).
_C.MODEL.CONFIG_FILE = ""
# Where open_clip looks for / caches downloaded weights ("" = open_clip's default).
_C.MODEL.CACHE_DIR = ""
# Run the text encoder only up to the longest prompt's EOT (exact; False = always 77 positions).
_C.MODEL.TEXT_TRUNCATE = True
# Prompt learners: compute the [SOS] + context positions shared by all classes once (exact).
_C.MODEL.TEXT_SHARED_PREFIX = True
# Both towers compute attention as one projection GEMM + scaled_dot_product_attention on contiguous
# batch-first tensors, with and without gradients and under autocast (nn.MultiheadAttention leaves its fast
# kernel under autocast or with gradients). False: open_clip's own MultiheadAttention calls.
_C.MODEL.FUSED_ATTENTION = True

# Folders (relative to configs/ or absolute) of <DATASET.NAME>.yaml files: a method's per-dataset settings
# (e.g. Tip-Adapter's search range on Flowers), merged in order right after the method's YAML when a file for
# the run's dataset exists. Set by the method's YAML; the run's config.yaml shows the effective values.
_C.PER_DATASET_DIRS = []

_C.TRAINER = CN()
_C.TRAINER.NAME = "ZeroShotCLIP"
# Each method adds its own node TRAINER.<NODE> (defaults, comments, validation live in its file);
# clip_convpass.config.compose puts them together with these engine keys.

VALID_PREC = ("auto", "fp32", "amp", "bf16")  # engine/precision.py says what each means
VALID_OPTIM = ("sgd", "adam", "adamw")
MAX_WORKERS = 256  # more DataLoader processes than any machine runs usefully: a typo
VALID_SCHED = ("cosine", "step", "constant")
VALID_WARMUP = ("constant", "linear")
VALID_TRANSFORMS = ("random_resized_crop", "random_flip", "resize", "resize_square", "center_crop", "color_jitter",
                    "rand_augment", "normalize", "random_erasing")


class ConfigError(UserError, ValueError):
    """A configuration file or value is invalid."""


def engine_defaults() -> CN:
    return _C.clone()


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A config path as given, or relative to the package's configs/ folder (e.g. trainers/CoOp/x.yaml)."""
    p = Path(path).expanduser()
    if p.is_file() or p.is_absolute():
        return p
    packaged = CONFIG_DIR / p
    return packaged if packaged.is_file() else p


def read_yaml(path: Path) -> dict:
    """A config file's mapping; malformed YAML, unsafe tags and non-mappings are one-line errors."""
    try:
        st = os.stat(path)
    except OSError:
        return _read_yaml(path)  # which says what is wrong
    return copy.deepcopy(_read_yaml_cached(os.path.realpath(path), st.st_mtime_ns, st.st_size))  # callers edit it


@functools.lru_cache(maxsize=256)  # a grid composes the same files for every cell; an edited file has a new mtime
def _read_yaml_cached(path: str, mtime_ns: int, size: int) -> dict:
    return _read_yaml(Path(path))


def _read_yaml(path: Path) -> dict:
    try:
        with open(path) as f:
            data = load_yaml(f) or {}
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"{path} is not valid YAML{at}: {getattr(e, 'problem', None) or str(e).splitlines()[0]}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not a text file ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


MODEL_CONFIG_INTS = ("layers", "width", "head_width", "patch_size", "heads", "context_length", "vocab_size", "mlp_ratio")


def read_model_config(path: str | os.PathLike) -> dict:
    """MODEL.CONFIG_FILE: an open_clip model-config JSON ({"embed_dim", "vision_cfg", "text_cfg"}, or a Hub repo's
    open_clip_config.json nesting it under "model_cfg") whose sizes are positive; one-line errors otherwise."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"MODEL.CONFIG_FILE={file} does not exist (an open_clip model-config JSON)")
    try:
        data = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"MODEL.CONFIG_FILE={file} is not valid JSON ({e})") from e
    model_cfg = data.get("model_cfg", data) if isinstance(data, dict) else None
    if not isinstance(model_cfg, dict) or not all(isinstance(model_cfg.get(k), d) for k, d in
                                                  (("embed_dim", int), ("vision_cfg", dict), ("text_cfg", dict))):
        raise ConfigError(f"MODEL.CONFIG_FILE={file} needs embed_dim, vision_cfg and text_cfg (an integer and two "
                          f"objects: open_clip's model-config format)")

    def positive(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0

    bad = [("embed_dim", model_cfg["embed_dim"])] if not positive(model_cfg["embed_dim"]) else []
    for tower in ("vision_cfg", "text_cfg"):
        for key in MODEL_CONFIG_INTS:
            if key in model_cfg[tower] and not positive(model_cfg[tower][key]):
                bad.append((f"{tower}.{key}", model_cfg[tower][key]))
    size = model_cfg["vision_cfg"].get("image_size", 224)
    if not (positive(size) or (isinstance(size, list) and len(size) == 2 and all(positive(v) for v in size))):
        bad.append(("vision_cfg.image_size", size))
    if bad:
        raise ConfigError(f"MODEL.CONFIG_FILE={file}: sizes must be positive numbers, got "
                          + ", ".join(f"{k}={v!r}" for k, v in bad))
    return model_cfg


def _load_yaml_chain(path: Path, seen: Optional[set] = None) -> list[Path]:
    """Return [base, ..., path] following ``_BASE_`` links."""
    seen = seen or set()
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}")
    if path in seen:
        raise ConfigError(f"Circular _BASE_ reference at {path}")
    seen.add(path)
    data = read_yaml(path)
    base = data.get("_BASE_")
    if base is not None and (not isinstance(base, str) or not base.strip()):
        raise ConfigError(f"{path}: _BASE_ must be a path to another YAML file (relative to this one), got {base!r}")
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
    for p in _load_yaml_chain(resolve_config_path(path)):
        data = read_yaml(p)
        data.pop("_BASE_", None)
        data = _coerce_tree(cfg, data)
        try:
            cfg.merge_from_other_cfg(CN(data))
        except KeyError as e:
            raise ConfigError(f"{p}: {e.args[0]} (valid keys: clip_convpass/config/defaults.py, and each method's "
                              f"config_node())") from e
        except ValueError as e:
            raise ConfigError(f"{p}: {e}") from e


def per_dataset_dirs(cfg: CN) -> List[Path]:
    out = []
    for folder in cfg.PER_DATASET_DIRS:
        base = Path(folder).expanduser()
        base = base if base.is_absolute() else CONFIG_DIR / base
        check(base.is_dir(), f"PER_DATASET_DIRS: {base} is not a folder")
        out.append(base)
    return out


def merge_per_dataset_configs(cfg: CN) -> List[Path]:
    """Merge each PER_DATASET_DIRS folder's <DATASET.NAME>.yaml (where one exists); returns the files merged."""
    merged = []
    for base in per_dataset_dirs(cfg):
        path = base / f"{cfg.DATASET.NAME}.yaml"
        if path.is_file():
            merge_config_file(cfg, path)
            merged.append(path)
    return merged


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


def check(cond: bool, msg: str) -> None:
    """Raise ConfigError(msg) unless cond: the one-line form every validator uses."""
    if not cond:
        raise ConfigError(msg)


def validate_engine_cfg(cfg: CN) -> None:
    """Reject invalid engine values before any work starts (methods check their own nodes)."""
    per_dataset_dirs(cfg)
    check(cfg.MODEL.PRE_LOGITS in ("keep", "drop"), f"MODEL.PRE_LOGITS must be keep|drop, got {cfg.MODEL.PRE_LOGITS!r}")
    check(0 <= cfg.MODEL.DROP_PATH_RATE < 1, f"MODEL.DROP_PATH_RATE must be in [0, 1), got {cfg.MODEL.DROP_PATH_RATE}")
    check(cfg.MODEL.DROP_PATH_RATE == 0 or cfg.MODEL.BACKBONE.startswith("timm:"),
          "MODEL.DROP_PATH_RATE needs a timm backbone (MODEL.BACKBONE timm:<name>); open_clip's towers have none")
    if cfg.MODEL.CONFIG_FILE:
        read_model_config(cfg.MODEL.CONFIG_FILE)
    check(cfg.PREC in VALID_PREC, f"PREC must be one of {VALID_PREC}, got {cfg.PREC!r}")
    check(cfg.OPTIM.NAME.lower() in VALID_OPTIM, f"OPTIM.NAME must be one of {VALID_OPTIM}, got {cfg.OPTIM.NAME!r}")
    for key in ("LR", "WEIGHT_DECAY", "MOMENTUM", "EPS", "WARMUP_CONS_LR", "WARMUP_MIN_LR", "GAMMA"):
        check(math.isfinite(cfg.OPTIM[key]), f"OPTIM.{key} must be a finite number, got {cfg.OPTIM[key]}")
    check(cfg.OPTIM.LR > 0, f"OPTIM.LR must be > 0, got {cfg.OPTIM.LR}")
    check(cfg.OPTIM.WEIGHT_DECAY >= 0, f"OPTIM.WEIGHT_DECAY must be >= 0, got {cfg.OPTIM.WEIGHT_DECAY}")
    check(cfg.OPTIM.MAX_EPOCH >= 0, f"OPTIM.MAX_EPOCH must be >= 0, got {cfg.OPTIM.MAX_EPOCH}")
    check(cfg.OPTIM.ITERS_PER_SHOT >= 0, f"OPTIM.ITERS_PER_SHOT must be >= 0, got {cfg.OPTIM.ITERS_PER_SHOT}")
    check(cfg.OPTIM.MIN_LR >= 0, f"OPTIM.MIN_LR must be >= 0, got {cfg.OPTIM.MIN_LR}")
    if cfg.OPTIM.ITERS_PER_SHOT:
        check(cfg.OPTIM.SCHEDULER_UNIT == "iteration", "OPTIM.ITERS_PER_SHOT needs OPTIM.SCHEDULER_UNIT iteration "
                                                       "(the schedule runs over the iteration budget)")
        check(cfg.DATASET.NUM_SHOTS >= 1, f"OPTIM.ITERS_PER_SHOT needs DATASET.NUM_SHOTS >= 1 (the budget is per "
                                          f"shot), got {cfg.DATASET.NUM_SHOTS}")
    check(cfg.OPTIM.LR_SCHEDULER in VALID_SCHED,
           f"OPTIM.LR_SCHEDULER must be one of {VALID_SCHED}, got {cfg.OPTIM.LR_SCHEDULER!r}")
    check(cfg.OPTIM.SCHEDULER_UNIT in ("epoch", "iteration"),
          f"OPTIM.SCHEDULER_UNIT must be epoch|iteration, got {cfg.OPTIM.SCHEDULER_UNIT!r}")
    check(cfg.OPTIM.WARMUP_TYPE in VALID_WARMUP,
           f"OPTIM.WARMUP_TYPE must be one of {VALID_WARMUP}, got {cfg.OPTIM.WARMUP_TYPE!r}")
    check(cfg.OPTIM.WARMUP_EPOCH >= 0, "OPTIM.WARMUP_EPOCH must be >= 0")
    check(cfg.OPTIM.SCHEDULE_LAG >= 0, f"OPTIM.SCHEDULE_LAG must be >= 0 epochs, got {cfg.OPTIM.SCHEDULE_LAG}")
    check(cfg.OPTIM.SCHEDULE_LAG == 0 or cfg.OPTIM.SCHEDULER_UNIT == "epoch",
          "OPTIM.SCHEDULE_LAG is a number of epochs: it needs OPTIM.SCHEDULER_UNIT epoch")
    check(cfg.DATASET.NUM_SHOTS >= 1, f"DATASET.NUM_SHOTS must be >= 1 (shots per class), got {cfg.DATASET.NUM_SHOTS}")
    check(cfg.DATASET.VAL_SHOTS >= -1, f"DATASET.VAL_SHOTS must be >= 0 (or -1: min(NUM_SHOTS, 4)), got {cfg.DATASET.VAL_SHOTS}")
    check(cfg.DATASET.FEWSHOT_SAMPLER in ("per_class", "coop"),
          f"DATASET.FEWSHOT_SAMPLER must be per_class|coop, got {cfg.DATASET.FEWSHOT_SAMPLER!r}")
    check(cfg.DATASET.SUBSAMPLE in ("all", "base", "new"),
           f"DATASET.SUBSAMPLE must be all|base|new, got {cfg.DATASET.SUBSAMPLE!r}")
    check(cfg.DATALOADER.TRAIN_X.BATCH_SIZE > 0, "DATALOADER.TRAIN_X.BATCH_SIZE must be > 0")
    check(cfg.DATALOADER.TEST.BATCH_SIZE > 0, "DATALOADER.TEST.BATCH_SIZE must be > 0")
    check(-1 <= cfg.DATALOADER.NUM_WORKERS <= MAX_WORKERS,
          f"DATALOADER.NUM_WORKERS must be in 0..{MAX_WORKERS} (or -1: one per core, at most 8), got "
          f"{cfg.DATALOADER.NUM_WORKERS}")
    check(0 <= cfg.SEED < 2**32, f"SEED must be an integer in 0..2**32-1, got {cfg.SEED}")
    check(cfg.TRAIN.CHECKPOINT_FREQ >= 1, "TRAIN.CHECKPOINT_FREQ must be >= 1")
    check(cfg.TRAIN.KEEP_CHECKPOINTS >= 1, "TRAIN.KEEP_CHECKPOINTS must be >= 1")
    check(cfg.TEST.MONITOR_EVERY >= 0, f"TEST.MONITOR_EVERY must be >= 0 (epochs), got {cfg.TEST.MONITOR_EVERY}")
    check(cfg.TRAIN.CHECKPOINT_MIN_SECONDS >= 0, "TRAIN.CHECKPOINT_MIN_SECONDS must be >= 0 (seconds)")
    if cfg.TRAIN.TENSORBOARD:
        import importlib.util

        check(importlib.util.find_spec("tensorboard") is not None,
              "TRAIN.TENSORBOARD True needs the tensorboard package (pip install tensorboard); "
              "train_history.csv holds the same scalars without it")
    check(cfg.TEST.SPLIT in ("test", "val"), f"TEST.SPLIT must be test|val, got {cfg.TEST.SPLIT!r}")
    check(cfg.TEST.FEATURE_CACHE_DTYPE in ("native", "fp16"),
           f"TEST.FEATURE_CACHE_DTYPE must be native|fp16, got {cfg.TEST.FEATURE_CACHE_DTYPE!r}")
    check(len(cfg.INPUT.SIZE) == 2, f"INPUT.SIZE must be (height, width), got {cfg.INPUT.SIZE}")
    check(cfg.INPUT.INTERPOLATION in ("bicubic", "bilinear", "nearest"),
           f"INPUT.INTERPOLATION must be bicubic|bilinear|nearest, got {cfg.INPUT.INTERPOLATION!r}")
    for key in ("TRANSFORMS", "TEST_TRANSFORMS"):
        for t in cfg.INPUT[key]:
            check(t in VALID_TRANSFORMS, f"INPUT.{key}: unknown transform {t!r}; choices: {VALID_TRANSFORMS}")
    check_crop_scale(cfg.INPUT.CROP_SCALE, "INPUT.CROP_SCALE")
    check(cfg.INPUT.RESIZE_SIZE >= 0, f"INPUT.RESIZE_SIZE must be >= 0 (0: INPUT.SIZE), got {cfg.INPUT.RESIZE_SIZE}")
    check(0 <= cfg.INPUT.COLOR_JITTER, f"INPUT.COLOR_JITTER must be >= 0, got {cfg.INPUT.COLOR_JITTER}")
    check(0 <= cfg.INPUT.RANDOM_ERASING <= 1, f"INPUT.RANDOM_ERASING must be a probability, got {cfg.INPUT.RANDOM_ERASING}")
    if "rand_augment" in cfg.INPUT.TRANSFORMS:
        try:
            from timm.data.auto_augment import rand_augment_transform

            rand_augment_transform(cfg.INPUT.RAND_AUGMENT, {})
        except Exception as e:  # timm's parser: an AssertionError or KeyError naming the bad part
            raise ConfigError(f"INPUT.RAND_AUGMENT {cfg.INPUT.RAND_AUGMENT!r} is not a timm RandAugment policy "
                              f"(e.g. rand-m9-mstd0.5-inc1): {type(e).__name__} {e}") from e
    for key in ("MIXUP", "CUTMIX", "LABEL_SMOOTHING"):
        check(math.isfinite(cfg.TRAIN[key]) and cfg.TRAIN[key] >= 0, f"TRAIN.{key} must be >= 0, got {cfg.TRAIN[key]}")
    check(cfg.TRAIN.LABEL_SMOOTHING < 1, f"TRAIN.LABEL_SMOOTHING must be < 1, got {cfg.TRAIN.LABEL_SMOOTHING}")
    check(not (cfg.TRAIN.MIXUP or cfg.TRAIN.CUTMIX) or (cfg.DATALOADER.TRAIN_X.DROP_LAST
                                                          and cfg.DATALOADER.TRAIN_X.BATCH_SIZE % 2 == 0),
          "TRAIN.MIXUP / TRAIN.CUTMIX pair each image with another of its batch: they need an even "
          "DATALOADER.TRAIN_X.BATCH_SIZE and DATALOADER.TRAIN_X.DROP_LAST True")
    check(len(cfg.INPUT.PIXEL_MEAN) == 3 and len(cfg.INPUT.PIXEL_STD) == 3,
          "INPUT.PIXEL_MEAN and INPUT.PIXEL_STD must have 3 values (R, G, B)")
    check(all(math.isfinite(s) and s > 0 for s in cfg.INPUT.PIXEL_STD),
          f"INPUT.PIXEL_STD values must be > 0, got {cfg.INPUT.PIXEL_STD}")


def parse_epochs_by_shots(rule: str) -> dict:
    """"1:50,2:100" -> {1: 50, 2: 100}; a one-line error for anything else."""
    out = {}
    for part in filter(None, (p.strip() for p in rule.split(","))):
        shots, sep, epochs = part.partition(":")
        ok = sep and shots.strip().isdigit() and epochs.strip().isdigit() and int(shots) >= 1
        check(bool(ok), f"OPTIM.MAX_EPOCH_BY_SHOTS must be 'shots:epochs,...' (e.g. '1:50,2:100,16:200'), got {rule!r}")
        out[int(shots)] = int(epochs)
    return out


def apply_epochs_by_shots(cfg: CN) -> None:
    """Set OPTIM.MAX_EPOCH from the per-shot schedule, if the config has one."""
    rule = parse_epochs_by_shots(cfg.OPTIM.MAX_EPOCH_BY_SHOTS)
    if not rule or cfg.DATASET.NAME in cfg.OPTIM.MAX_EPOCH_BY_SHOTS_EXCEPT:
        return
    shots = cfg.DATASET.NUM_SHOTS
    eligible = [k for k in rule if k <= shots]
    check(bool(eligible), f"OPTIM.MAX_EPOCH_BY_SHOTS {cfg.OPTIM.MAX_EPOCH_BY_SHOTS!r} has no entry for "
                          f"DATASET.NUM_SHOTS={shots} (its smallest shot count is {min(rule)})")
    cfg.OPTIM.MAX_EPOCH = rule[max(eligible)]


def check_crop_scale(scale, key: str) -> None:
    check(len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1,
          f"{key} must be (low, high) with 0 < low <= high <= 1, got {tuple(scale)}")


# Where things are read or written: never part of what an experiment is.
LOCATION_KEYS = ("OUTPUT_DIR", "DATASET.ROOT", "DATASET.SPLIT_DIR", "TEST.FEATURE_CACHE_DIR", "MODEL.CACHE_DIR")
# Settings that change neither the numbers nor what they mean (logging, data-loading parallelism).
NEUTRAL_KEYS = ("DATALOADER.NUM_WORKERS", "TRAIN.PRINT_FREQ", "TRAIN.TENSORBOARD")
# Path-valued keys: "~" is expanded in each.
PATH_KEYS = LOCATION_KEYS + ("DATASET.CLASS_LIST", "MODEL.PRETRAINED", "MODEL.CONFIG_FILE")


def flat_items(cfg) -> dict:
    """{"OPTIM.LR": 0.002, ...}: every leaf key of a config (or of the YAML text of one)."""
    return copy.deepcopy(dict(_flat_items_of_text(cfg if isinstance(cfg, str) else cfg.dump())))  # callers may edit


@functools.lru_cache(maxsize=64)  # a run asks for the same configuration's keys several times
def _flat_items_of_text(text: str) -> Tuple[Tuple[str, object], ...]:
    return tuple(_flat_items(text).items())


def _flat_items(text: str) -> dict:
    tree = load_yaml(text)
    out = {}

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[prefix + k] = v

    walk(tree, "")
    return out


def expand_user_paths(cfg: CN) -> None:
    for key in PATH_KEYS:
        node, leaf = _node_and_leaf(cfg, key)
        value = node[leaf]
        if isinstance(value, str) and value.startswith("~"):
            node[leaf] = os.path.expanduser(value)


def _node_and_leaf(cfg: CN, key: str):
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    return node, leaf


# Keys that do not make two runs different experiments: the seed (a run of the experiment), what it is
# evaluated on and how (DATASET.NAME is the evaluation target; the training set is recorded apart).
NOT_EXPERIMENT_KEYS = ("SEED", "NAME", "DEVICE", "DATASET.NAME", "TRAIN.CHECKPOINT_FREQ", "TRAIN.KEEP_CHECKPOINTS",
                       "TRAIN.CHECKPOINT_MIN_SECONDS")
NOT_EXPERIMENT_PREFIXES = ("TEST.", "DATALOADER.TEST.")


def experiment_hash(cfg) -> str:
    """Seed-independent hash of a (training) configuration, a CfgNode or its YAML text: two runs with the
    same hash and different seeds are repetitions of one experiment."""
    items = {k: v for k, v in flat_items(cfg).items()
             if k not in (*LOCATION_KEYS, *NEUTRAL_KEYS, *NOT_EXPERIMENT_KEYS) and not k.startswith(NOT_EXPERIMENT_PREFIXES)}
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_hash(cfg: CN, exclude: Sequence[str] = ()) -> str:
    """Hash of everything that determines a result: not where it is read or written, not logging or
    parallelism, and not the keys in `exclude` (e.g. SEED, for the experiment a seed belongs to)."""
    key = (cfg.dump(), tuple(exclude))  # the full text: a configuration's hash is made once per content
    if key not in _HASHES:
        c = cfg.clone()
        c.defrost()
        for k in (*LOCATION_KEYS, *NEUTRAL_KEYS, *exclude):
            node, leaf = _node_and_leaf(c, k)
            node[leaf] = type(node[leaf])()
        if len(_HASHES) > 256:
            _HASHES.clear()
        _HASHES[key] = hashlib.sha256(c.dump().encode()).hexdigest()[:16]
    return _HASHES[key]


_HASHES: dict = {}  # {(configuration text, excluded keys): hash}
