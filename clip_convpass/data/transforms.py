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
    composed = T.Compose(ops)
    # timm's RandAugment and random erasing draw from Python's and numpy's generators, torchvision's from torch's:
    # only then must a sample seed (and restore) those two as well (a quarter of a millisecond per sample)
    composed.draws_python_numpy = bool({"rand_augment", "random_erasing"} & set(names))
    return composed


def rand_augment(cfg, interp):
    """timm's RandAugment with the parameters timm's ImageNet training transform gives it (translation 45% of the
    crop, fill with the mean colour, the resize interpolation): what NOAH's few-shot recipe builds."""
    from timm.data.auto_augment import rand_augment_transform

    mean = tuple(min(255, round(255 * m)) for m in cfg.INPUT.PIXEL_MEAN)
    params = {"translate_const": int(min(cfg.INPUT.SIZE) * 0.45), "img_mean": mean,
              "interpolation": getattr(Image, interp.name)}
    policy = rand_augment_transform(cfg.INPUT.RAND_AUGMENT, params)
    for op in policy.ops:  # this instance's posterize keeps the old meaning of 0 bits
        if op.aug_fn.__name__ == "posterize":
            op.aug_fn = posterize
    return policy


def posterize(img: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    """timm's posterize with 0 bits meaning what it meant to the Pillow NOAH ran on: every pixel 0 (a black image).
    timm's increasing posterize reaches 0 bits at the top magnitude (RandAugment's noise gets there), which Pillow
    >= 11 refuses with an error: a run would fail at a random sample."""
    from PIL import ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point([0] * 256 * len(img.getbands()))
    return ImageOps.posterize(img, bits_to_keep)
