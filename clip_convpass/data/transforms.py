"""Train / test transforms from INPUT.* (CLIP mean/std and bicubic resizing by default)."""
from __future__ import annotations

from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

_INTERP = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
           "nearest": InterpolationMode.NEAREST}


def build_transform(cfg, is_train: bool, names=None, crop_scale=None) -> T.Compose:
    names = list(names if names is not None else (cfg.INPUT.TRANSFORMS if is_train else cfg.INPUT.TEST_TRANSFORMS))
    size = tuple(cfg.INPUT.SIZE)
    interp = _INTERP[cfg.INPUT.INTERPOLATION]
    ops = []
    for name in names:
        if name == "random_resized_crop":
            ops.append(T.RandomResizedCrop(size, scale=tuple(crop_scale or cfg.INPUT.CROP_SCALE), interpolation=interp))
        elif name == "random_flip":
            ops.append(T.RandomHorizontalFlip())
        elif name == "resize":
            # shorter side to the crop size, as CLIP's preprocessing does
            ops.append(T.Resize(max(size), interpolation=interp))
        elif name == "resize_square":
            # the whole image to exactly INPUT.SIZE, aspect ratio not kept (the Convpass paper's wording)
            ops.append(T.Resize(size, interpolation=interp))
        elif name == "center_crop":
            ops.append(T.CenterCrop(size))
        elif name == "normalize":
            continue  # always applied last, after ToTensor
        else:
            raise ValueError(f"Unknown transform {name!r}")
    ops.append(T.ToTensor())
    if "normalize" in names:
        ops.append(T.Normalize(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD))
    return T.Compose(ops)
