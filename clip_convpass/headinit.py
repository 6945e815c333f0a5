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

from .grid import run_grid
from .registry import Row, find_row
from .report import aggregate, build_table, collect, render, table2_domains
from .utils import setup_logger

CONVPASS_ROW = "ConvpassCLIP"  # the registered row whose config the study varies
INITS = [("text-1", "text", "single"), ("text-7", "text", "ensemble7"), ("text-80", "text", "ensemble80"),
         ("random", "random", "single"), ("zero", "zero", "single")]


def table_domains() -> List[str]:
    domains = table2_domains()
    return [f"{domains[0]}@step0"] + domains


def head_init_rows(extra_opts: Sequence[str] = ()) -> List[Row]:
    base = find_row(CONVPASS_ROW)
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
                methods.append(Row(name, base.config, opts=tuple(opts), trainer=base.trainer, tables=(),
                                   tag=f"headinit_{model.lower()}_{label}_{head}"))
    return methods


def head_init_table(roots: Sequence[str | Path], fmt: str = "terminal") -> str:
    names = [m.name for m in head_init_rows()]
    records = [r for r in collect(roots) if r.get("name") in names]
    table = build_table(aggregate(records), domains=table_domains(), order=names)
    return render(table, fmt)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3])
    p.add_argument("--force", action="store_true")
    p.add_argument("--override-config", action="append", default=[], help="YAML merged after the method's (repeatable)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    args = p.parse_args(argv)
    setup_logger(None)
    run_grid(head_init_rows(), args.seeds, args.data, args.output, args.opts, force=args.force,
             override_configs=args.override_config, eval_step0=True)
    print(head_init_table([args.output]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
