"""Zero-shot head-initialisation experiments.

Convpass_CLIP, and a head-only probe (the same trainer without bypasses: a linear probe trained
by gradient descent from the given init), with the head initialised from one template, the 7- or
80-template ensemble, random unit rows or zeros; head trainable or frozen. Each run is also
evaluated before training (step 0: for a text head this is zero-shot CLIP), so the table shows the
step-0 accuracy next to the trained accuracy.

    python -m clip_convpass.headinit --data DATA --output OUT [--seeds 1 2 3] [KEY VALUE ...]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional, Sequence

from .grid import Method, run_grid
from .report import DOMAINS, aggregate, build_table, collect, render
from .utils import setup_logger

CONVPASS_CONFIG = "trainers/ConvpassCLIP/vit_b16.yaml"
INITS = [("text-1", "text", "single"), ("text-7", "text", "ensemble7"), ("text-80", "text", "ensemble80"),
         ("random", "random", "single"), ("zero", "zero", "single")]
TABLE_DOMAINS = ["ImageNet@step0"] + DOMAINS


def head_init_methods(extra_opts: Sequence[str] = ()) -> List[Method]:
    methods = []
    for model, positions in (("Convpass", "both"), ("Probe", "none")):
        for head in ("trainable", "frozen"):
            if model == "Probe" and head == "frozen":
                continue  # nothing would train
            for label, init, templates in INITS:
                name = f"{model} head={label} {head}"
                opts = ["TRAINER.CONVPASS.POSITIONS", positions, "TRAINER.CONVPASS.HEAD_INIT", init,
                        "TRAINER.CONVPASS.TEMPLATES", templates,
                        "TRAINER.CONVPASS.HEAD_TRAINABLE", str(head == "trainable"), *extra_opts]
                methods.append(Method(name, CONVPASS_CONFIG, opts, tag=f"headinit_{model.lower()}_{label}_{head}"))
    return methods


def head_init_table(roots: Sequence[str | Path], fmt: str = "terminal") -> str:
    names = [m.name for m in head_init_methods()]
    records = [r for r in collect(roots) if r.get("name") in names]
    table = build_table(aggregate(records), domains=TABLE_DOMAINS, order=names)
    return render(table, fmt)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3])
    p.add_argument("--force", action="store_true")
    p.add_argument("--override-config", default="")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    args = p.parse_args(argv)
    setup_logger(None)
    run_grid(head_init_methods(), args.seeds, args.data, args.output, args.opts, force=args.force,
             override_config=args.override_config or None, eval_step0=True)
    print(head_init_table([args.output]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
