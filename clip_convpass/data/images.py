"""Image decoding to RGB, and the torch Dataset / collate that can skip (and count) unreadable files."""
from __future__ import annotations

import contextlib
import logging
import random
from typing import Callable, List, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from clip_convpass.data.types import Datum, stable_int
from clip_convpass.utils.errors import UserError

logger = logging.getLogger(__name__)


class ImageLoadError(UserError, RuntimeError):
    """An image file could not be decoded; the message names the file."""


def _to_8bit_gray(im: Image.Image) -> Image.Image:
    """16-bit ("I;16*", or "I" holding 16-bit data) and float ("F") grayscale scaled to 0..255.

    PIL's convert("RGB") clips such values at 255, which turns most 16-bit images white."""
    a = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        a = a * 255.0 if a.size and a.max() <= 1.0 else a  # float images are stored as 0..1 or 0..255
    elif im.mode.startswith("I;16") or (a.size and a.max() > 255):
        a = a / 257.0  # 65535 -> 255
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def load_rgb(path: str) -> Image.Image:
    """Decode any PIL-readable file (whatever its extension says) to RGB: CMYK, L, P, RGBA, 16-bit, ..."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so truncated files fail here and not inside a transform
            if im.mode in ("I", "F") or im.mode.startswith("I;16"):
                im = _to_8bit_gray(im)
            if im.mode == "P":
                im = im.convert("RGBA")
            if im.mode in ("RGBA", "LA"):
                # Composite on white: dropping alpha would expose arbitrary colours under transparent pixels.
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im.convert("RGBA"))
            return im.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageLoadError(f"Cannot read image {path}: {type(e).__name__}: {e}") from e


class ImageListDataset(Dataset):
    """Items are read by index i, or by (sample_seed, i) as StreamSampler yields them: then the random transforms
    of item i draw from a generator seeded by (sample_seed, i), in any process, whatever the batch or worker, and
    the process's own RNG state is left untouched. Passing the seed with the index (not storing it here) lets
    workers that persist across epochs serve every epoch's stream."""

    def __init__(self, items: Sequence[Datum], transform: Callable, skip_bad: bool = False):
        self.items = list(items)
        self.transform = transform
        self.skip_bad = skip_bad
        # a transform that says it draws from torch's generator alone spares each sample Python's and numpy's
        self.draws_python_numpy = getattr(transform, "draws_python_numpy", True)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> dict:
        sample_seed, i = key if isinstance(key, tuple) else (None, key)
        d = self.items[i]
        try:
            img = load_rgb(d.impath)
        except ImageLoadError as e:
            if not self.skip_bad:
                raise
            return {"bad_path": d.impath, "error": str(e)}
        if sample_seed is None:
            return {"img": self.transform(img), "label": d.label}
        seed = stable_int(sample_seed, i)
        others = forked_python_and_numpy_rng(seed) if self.draws_python_numpy else contextlib.nullcontext()
        with torch.random.fork_rng(devices=[]), others:
            # the CPU generator alone: torch.manual_seed would also queue a CUDA seeding call (with its stack
            # trace) per sample while CUDA is not initialised, a millisecond each and a list that only grows
            torch.default_generator.manual_seed(seed % (2**63))
            return {"img": self.transform(img), "label": d.label}


@contextlib.contextmanager
def forked_python_and_numpy_rng(seed: int):
    """Python's and numpy's global generators seeded for one sample and restored after it: timm's RandAugment and
    random erasing draw from them, torchvision's transforms from torch's."""
    state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        yield
    finally:
        random.setstate(state)
        np.random.set_state(np_state)


def log_new_skipped(batch: dict, seen: set) -> None:
    """Name each unreadable file in the log the first time a run skips it; `seen` collects them."""
    for path, err in batch["skipped"]:
        if path not in seen:
            logger.warning(f"Skipped unreadable training image: {err}")
            seen.add(path)


def collate_skipping(batch: List[dict]) -> dict:
    good = [b for b in batch if "bad_path" not in b]
    out = default_collate(good) if good else {"img": None, "label": None}
    out["skipped"] = [(b["bad_path"], b["error"]) for b in batch if "bad_path" in b]
    return out
