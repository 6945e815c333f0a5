"""Head-initialisation study.

Convpass_CLIP, and a head-only probe (the same trainer without bypasses: a linear probe trained
by gradient descent from the given init), with the head initialised from one template, the 7- or
80-template ensemble, random unit rows, zeros or a linear probe (LP-FT); head trainable or frozen;
degenerate cells (nothing would train) are left out and refused by the config check. Each cell's
learning rate (frozen head) or head learning-rate multiplier (trainable head) is chosen on the
validation shots by a sweep. Each run is also evaluated before training (step 0: for a text head this
is zero-shot CLIP), so the table shows the step-0 accuracy next to the trained accuracy on all domains.
The Convpass cells use the bypasses of Table 2's row: the s its sweep chose (`table2_choice`), not defaults.

    python -m clip_convpass.headinit --data DATA --output OUT [--seeds 1 2 3] [KEY VALUE ...]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from clip_convpass.experiments.grid import run_grid
from clip_convpass.models.heads import HEAD_PARAMS
from clip_convpass.registry import Row, find_row
from clip_convpass.reporting.records import aggregate, collect
from clip_convpass.reporting.table2 import build_table, render, table2_domains
from clip_convpass.utils.args import join_numeric_lists, number_list
from clip_convpass.utils.errors import entry_point
from clip_convpass.utils.logging import setup_logger

CONVPASS_ROW = "ConvpassCLIP"  # the registered row whose config the study varies
INITS = [("text-1", "text", "single"), ("text-7", "text", "ensemble7"), ("text-80", "text", "ensemble80"),
         ("random", "random", "single"), ("zero", "zero", "single"), ("lp", "lp", "single")]
MODELS = (("Convpass", "both"), ("Probe", "none"))  # the probe: the same trainer without bypasses
HEADS = ("trainable", "frozen")
# What each cell chooses on the validation shots: a trainable head's learning-rate multiplier (at the
# paper's lr 1e-5 a text row of norm 100 moves by <= ~1.4% otherwise), a frozen head's run the bypasses' LR.
HEAD_SWEEPS = {"trainable": ("TRAINER.CONVPASS.HEAD_LR_MULT=1,10,100,1000",),
               "frozen": ("OPTIM.LR=1e-5,1e-4,1e-3",)}


def degenerate(model: str, head: str, init: str) -> str:
    """Why a cell cannot train (the configuration check refuses it too), or ""."""
    if model == "Probe" and head == "frozen":
        return "no bypasses and a frozen head: nothing trains"
    if init == "zero" and head == "frozen":
        return "a frozen zero head gives zero logits and zero gradients: nothing trains"
    return ""


def table_domains() -> List[str]:
    """Step-0 (before training) and final accuracy on every Table 2 domain."""
    domains = table2_domains()
    return [f"{d}@step0" for d in domains] + domains


def cell_opts(model: str, head: str, init: str, templates: str, head_param: str = "folded") -> List[str]:
    positions = dict(MODELS)[model]
    return ["TRAINER.CONVPASS.POSITIONS", positions, "TRAINER.CONVPASS.HEAD_INIT", init,
            "TRAINER.CONVPASS.TEMPLATES", templates, "TRAINER.CONVPASS.HEAD_TRAINABLE", str(head == "trainable"),
            "TRAINER.CONVPASS.HEAD_PARAM", head_param]


def table2_choice(data: str, output: str | Path, opts: Sequence[str] = (), override_configs: Sequence[str | Path] = (),
                  seed: int = 1, sweep_json: Optional[Path] = None) -> Dict[str, str]:
    """What the Table 2 row's sweep chose (its s, by the rule every PETL row shares), for the study's Convpass
    cells: read from `sweep_json` (e.g. a Table 2 grid's) or from `output`'s sweeps, run there first if needed."""
    from clip_convpass.experiments.grid import build_cell_cfg, select_by_sweep

    row = find_row(CONVPASS_ROW)
    if not row.sweep:
        return {}
    shots = build_cell_cfg(row, seed, data, output, opts, override_configs).DATASET.NUM_SHOTS
    chosen, _ = select_by_sweep(row, seed, data, Path(output), opts, override_configs, "ImageNet", sweep_json, shots)
    return chosen


def head_init_rows(extra_opts: Sequence[str] = (), head_params: Sequence[str] = ("folded",),
                   inits: Optional[Sequence[str]] = None, sweeps: Optional[Dict[str, Sequence[str]]] = None,
                   convpass_values: Optional[Dict[str, str]] = None) -> List[Row]:
    """Every non-degenerate cell of inits x head {trainable, frozen} x {Convpass, head-only probe} (x head
    parameterisations), each with its sweep (HEAD_SWEEPS unless `sweeps` is given). The Convpass cells take
    `convpass_values` (the Table 2 row's chosen s: `table2_choice`), so that they are Table 2's model."""
    base = find_row(CONVPASS_ROW)
    sweeps = HEAD_SWEEPS if sweeps is None else sweeps
    methods = []
    for param in head_params:
        for model, _ in MODELS:
            for head in HEADS:
                for label, init, templates in INITS:
                    if (inits is not None and label not in inits) or degenerate(model, head, init):
                        continue
                    suffix = "" if param == "folded" else f" {param}"
                    name = f"{model} head={label} {head}{suffix}"
                    chosen = convpass_values if model == "Convpass" and convpass_values else {}
                    opts = [*cell_opts(model, head, init, templates, param), *extra_opts,
                            *[x for kv in chosen.items() for x in kv]]
                    tag = f"headinit_{model.lower()}_{label}_{head}" + (f"_{param}" if suffix else "")
                    methods.append(Row(name, base.config, opts=tuple(opts), trainer=base.trainer, tables=(),
                                       tag=tag, sweep=tuple(sweeps.get(head, ()))))
    return methods


def head_init_table(roots: Sequence[str | Path], fmt: str = "terminal", head_params: Sequence[str] = ("folded",)) -> str:
    names = [m.name for m in head_init_rows(head_params=head_params)]
    records = [r for r in collect(roots) if r.get("name") in names]
    notes: List[str] = []
    table = build_table(aggregate(records, notes=notes), domains=table_domains(), order=names)
    return render(table, fmt, notes=notes)


@entry_point
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--seeds", type=number_list(int), default=[1, 2, 3], metavar="SEED [SEED ...]")
    p.add_argument("--force", action="store_true")
    p.add_argument("--override-config", action="append", default=[], help="YAML merged after the method's (repeatable)")
    p.add_argument("--head-params", nargs="+", default=["folded"], choices=list(HEAD_PARAMS),
                   help="head parameterisations to run (each a full set of cells)")
    p.add_argument("--inits", nargs="+", default=None, choices=[i[0] for i in INITS], help="default: all")
    p.add_argument("--no-sweep", action="store_true",
                   help="use the config's values (s, LR, multiplier) instead of choosing them on the validation shots")
    p.add_argument("--table2-sweep", default=None, type=Path,
                   help="the Convpass_CLIP row's finished sweep.json from a Table 2 grid (OUT/sweeps/ImageNet_16shots/"
                        "ConvpassCLIP/sweep.json): its chosen s is used (default: chosen here by the same rule)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    args = p.parse_args(join_numeric_lists(argv or [], {"--seeds": int}))
    setup_logger(None)
    chosen = {} if args.no_sweep else table2_choice(args.data, args.output, args.opts, args.override_config,
                                                     min(args.seeds or [1]), args.table2_sweep)
    rows = head_init_rows(head_params=args.head_params, inits=args.inits, convpass_values=chosen)
    run_grid(rows, args.seeds, args.data, args.output, args.opts, force=args.force,
             override_configs=args.override_config, eval_step0=True, sweeps=not args.no_sweep)
    print(head_init_table([args.output], head_params=args.head_params))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
