"""Train / test transforms from INPUT.* (CLIP mean/std and bicubic resizing by default)."""
from __future__ import annotations

from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

_INTERP = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
           "nearest": InterpolationMode.NEAREST}


def build_transform(cfg, is_train: bool, names=None, crop_scale=None) -> T.Compose:
    names = list(names if names is not None else (cfg.INPUT.TRANSFORMS if is_train else cfg.INPUT.TEST_TRANSFORMS))
    size = tuple(cfg.INPUT.SIZE)
    interp = _INTERP[cfg.INPUT.INTERPOLATION]
    ops = []
    resize_to = cfg.INPUT.RESIZE_SIZE or None
    for name in names:
        if name == "random_resized_crop":
            ops.append(T.RandomResizedCrop(size, scale=tuple(crop_scale or cfg.INPUT.CROP_SCALE), interpolation=interp))
        elif name == "random_flip":
            ops.append(T.RandomHorizontalFlip())
        elif name == "resize":
            # shorter side to the crop size, as CLIP's preprocessing does
            ops.append(T.Resize(resize_to or max(size), interpolation=interp))
        elif name == "resize_square":
            # the whole image to exactly INPUT.SIZE, aspect ratio not kept (the Convpass paper's wording)
            ops.append(T.Resize((resize_to, resize_to) if resize_to else size, interpolation=interp))
        elif name == "center_crop":
            ops.append(T.CenterCrop(size))
        elif name == "rand_augment":
            ops.append(rand_augment(cfg, interp))
        elif name == "color_jitter":  # brightness, contrast and saturation by INPUT.COLOR_JITTER, as timm's
            ops.append(T.ColorJitter(*(cfg.INPUT.COLOR_JITTER,) * 3))
        elif name in ("normalize", "random_erasing"):
            continue  # on the tensor, after ToTensor
        else:
            raise ValueError(f"Unknown transform {name!r}")
    ops.append(T.ToTensor())
    if "normalize" in names:
        ops.append(T.Normalize(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD))
    if "random_erasing" in names:
        from timm.data.random_erasing import RandomErasing

        ops.append(RandomErasing(cfg.INPUT.RANDOM_ERASING, mode="pixel", max_count=1, device="cpu"))
    return T.Compose(ops)


def rand_augment(cfg, interp):
    """timm's RandAugment with the parameters timm's ImageNet training transform gives it (translation 45% of the
    crop, fill with the mean colour, the resize interpolation): what NOAH's few-shot recipe builds."""
    from timm.data.auto_augment import rand_augment_transform

    mean = tuple(min(255, round(255 * m)) for m in cfg.INPUT.PIXEL_MEAN)
    params = {"translate_const": int(min(cfg.INPUT.SIZE) * 0.45), "img_mean": mean,
              "interpolation": getattr(Image, interp.name)}
    return rand_augment_transform(cfg.INPUT.RAND_AUGMENT, params)
