"""FGVC-Aircraft as CoOp reads it: no JSON split, the archive's own variant lists."""
from pathlib import Path
from typing import Dict, List

from clip_convpass.data.types import DatasetLayoutError
from clip_convpass.datasets.coop_split import SPLITS, Entry, SplitFileDataset, SplitFileTree
from clip_convpass.registry import DATASET_REGISTRY, SYNTHETIC_TREE_REGISTRY


@DATASET_REGISTRY.register
class FGVCAircraft(SplitFileDataset):
    NAME = "FGVCAircraft"
    ORDER = 25
    LABEL = "Aircraft"
    LAYOUTS = ("fgvc_aircraft",)
    SPLIT_FILE = "variants.txt"  # class order; the splits are images_variant_{train,val,test}.txt
    IMAGE_DIR = "images"
    LAYOUT_HELP = ("fgvc_aircraft/images/<id>.jpg, fgvc_aircraft/variants.txt, "
                   "fgvc_aircraft/images_variant_{train,val,test}.txt (the archive's data/ folder renamed)")
    TEMPLATES = ("a photo of a {}, a type of aircraft.",)
    EXPECTED_CLASSES = 100
    EXPECTED_SPLITS = {"train": 3334, "val": 3333, "test": 3333}
    EXPECTED_TEST_IMAGES = 3333

    def split_source_files(self) -> List[Path]:
        return [self._required_file(n) for n in ("variants.txt", *(f"images_variant_{s}.txt" for s in SPLITS))]

    def read_splits(self) -> Dict[str, List[Entry]]:
        variants = [ln.strip() for ln in open(self._required_file("variants.txt")) if ln.strip()]
        label = {v: i for i, v in enumerate(variants)}
        out = {}
        for split in SPLITS:
            path = self._required_file(f"images_variant_{split}.txt")
            rows = []
            for lineno, line in enumerate(open(path), 1):
                parts = line.strip().split(" ")
                if not line.strip():
                    continue
                variant = " ".join(parts[1:])
                if len(parts) < 2 or variant not in label:
                    raise DatasetLayoutError(f"{self.NAME}: {path}:{lineno}: expected '<image id> <variant from "
                                             f"variants.txt>', got {line.strip()!r}")
                rows.append((parts[0] + ".jpg", label[variant], variant))
            out[split] = rows
        return out


@SYNTHETIC_TREE_REGISTRY.register
class FGVCAircraftTree(SplitFileTree):
    NAME = "FGVCAircraft"
    CLASSES = tuple(("", c) for c in ("707-320", "727-200", "737-200", "737-300", "737-400", "737-500",
                                      "737-600", "737-700"))
    PATTERN = "{{j:07d}}"

    @classmethod
    def finish(cls, root, class_ids, sizes):
        folder = Path(root) / cls.dataset().LAYOUTS[0]
        (folder / "variants.txt").write_text("".join(f"{c}\n" for c in class_ids))
        for split, rows in cls.entries(class_ids, sizes).items():
            (folder / f"images_variant_{split}.txt").write_text("".join(f"{rel[:-4]} {name}\n" for rel, _, name in rows))
