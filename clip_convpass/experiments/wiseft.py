"""WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models"): weight-space interpolation
theta(alpha) = theta_0 + alpha * (theta_1 - theta_0) between the model a run started from (theta_0) and
the model it trained (theta_1), evaluated at each alpha without retraining.

theta_0 is rebuilt from the run's config and seed, so it is exactly the run's starting point:
  * Convpass_CLIP and the other adapters: the text head (zero-shot CLIP's classifier) and adapters that
    are the identity at init (zero-initialised up-projections, LoRA's B = 0, BitFit's pretrained biases),
    so alpha = 0 is zero-shot CLIP exactly (tested). For LP-FT runs theta_0 is still the text head (the
    zero-shot endpoint of WiSE-FT), not the probe. VPT's prompts are not the identity at init: its
    alpha = 0 is the untrained prompted model, not zero-shot CLIP.
  * CoOp / CoCoOp: the context vectors from their init ("a photo of a" in the ctxv1 configs: alpha = 0 is
    zero-shot CLIP with that template; random init: a random prompt).
  * Tip-Adapter-F: the cache-initialised model it fine-tunes (keys = the training-free cache, INIT_ALPHA and
    INIT_BETA); its keys, alpha and beta are interpolated (alpha = 0 is that model's evaluation before
    fine-tuning, tested).
  * LoRA: the weights W0 + alpha s B1 A1 (linear in alpha), not its two factors apart.
With --zero-shot-templates SET, theta_0's text head is built from another template set (ensemble80 is
wise-ft's zero-shot classifier); the default, run, keeps the run's own templates so that alpha = 0 is
exactly the model fine-tuning started from.
Only gradient-trained parameters are interpolated; methods without any (zero-shot CLIP, the linear probe,
Tip-Adapter) are refused. Results go to <run>/eval_wise<alpha>/<dataset>/results.json (stage
"wise<alpha>", field "wise_alpha"); `python -m clip_convpass.report OUT --robustness` plots them.

    python -m clip_convpass.wiseft RUN_DIR [RUN_DIR ...] [--under OUTPUT] --data DATA [--alphas 0 0.1 ... 1]
    scripts/robustness.sh: WiSE-FT of every fine-tuned run of a Table 2 grid, then the table and plot
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from clip_convpass.engine.checkpoint import checkpoint_digest
from clip_convpass.engine.rundir import RunDir
from clip_convpass.registry import evaluation_domains
from clip_convpass.utils.args import join_numeric_lists, number_list
from clip_convpass.utils.errors import UserError, entry_point

logger = logging.getLogger(__name__)
DEFAULT_ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))


def stage_name(alpha: float) -> str:
    return f"wise{alpha:g}"


def interpolate_(trainer, theta0: Dict[str, torch.Tensor], theta1: Dict[str, torch.Tensor], alpha: float) -> None:
    """Set the trainer's interpolated state (`wise_ft_tensors`) to theta(alpha); alpha = 0 and 1 give the
    endpoints exactly. A module that defines `wise_ft_interpolate_` (LoRA: the weights its factors make)
    interpolates its own parameters."""
    tensors = trainer.wise_ft_tensors()
    handled = set()
    with torch.no_grad():
        for prefix, module in trainer.model.named_modules():
            rule = getattr(module, "wise_ft_interpolate_", None)
            if rule is None:
                continue
            own = {n: f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters(recurse=False)}
            if not set(own.values()) <= set(tensors):
                continue  # not trained in this run
            rule({n: theta0[full] for n, full in own.items()}, {n: theta1[full] for n, full in own.items()}, alpha)
            handled.update(own.values())
        for name, t in tensors.items():
            if name not in handled:
                t.copy_(theta1[name] if alpha == 1 else theta0[name] + alpha * (theta1[name] - theta0[name]))


def load_run(run_dir: str | Path, data: str = "", opts: Sequence[str] = ()):
    """(config, trainer) of a finished run: the trainer holds theta_0 (freshly built from config and seed)."""
    from clip_convpass.config import setup_cfg
    from clip_convpass.engine.runner import build_trainer

    run = RunDir(run_dir)
    if not run.config.is_file():
        raise UserError(f"{run.root} is not a run directory (no config.yaml)")
    location = ["OUTPUT_DIR", str(run.root), *(["DATASET.ROOT", data] if data else [])]
    cfg = setup_cfg(None, run.config, [*location, *opts])
    return cfg, build_trainer(cfg)


def wise_ft(run_dir: str | Path, alphas: Sequence[float] = DEFAULT_ALPHAS, datasets: Sequence[str] = (),
            data: str = "", opts: Sequence[str] = (), zero_shot_templates: str = "run") -> List[dict]:
    check_alphas(alphas)
    cfg, trainer = load_run(run_dir, data, opts)
    return _wise_ft(cfg, trainer, run_dir, alphas, datasets, start_from(run_dir, cfg, trainer, data, opts, zero_shot_templates))


def has_text_head(cfg, trainer) -> bool:
    node = cfg.TRAINER.get(getattr(trainer, "CONFIG_NODE", ""), None)
    return node is not None and "HEAD_INIT" in node and node.HEAD_INIT in ("text", "lp")


def start_from(run_dir, cfg, trainer, data: str, opts: Sequence[str], zero_shot_templates: str = "run"):
    """theta_0: the run's own starting model ("run"), or, for a text-initialised head, the same model with its
    head built from another template set (e.g. ensemble80: wise-ft's zero-shot classifier)."""
    if zero_shot_templates == "run":
        return None
    if not has_text_head(cfg, trainer):
        raise UserError(f"--zero-shot-templates: {cfg.TRAINER.NAME} has no text-initialised head; its WiSE-FT start is "
                        f"the run's own initial state (use the default, run)")
    from clip_convpass.models.prompts import check_templates

    check_templates(zero_shot_templates, "--zero-shot-templates")
    _, other = load_run(run_dir, data, [*opts, f"TRAINER.{trainer.CONFIG_NODE}.TEMPLATES", zero_shot_templates,
                                        f"TRAINER.{trainer.CONFIG_NODE}.HEAD_INIT", "text"])
    other.wise_ft_start()
    trainer.annotations["wise_zero_shot_templates"] = zero_shot_templates
    return {n: t.detach().clone() for n, t in other.wise_ft_tensors().items()}


def check_alphas(alphas: Sequence[float]) -> None:
    bad = [a for a in alphas if not 0 <= a <= 1]
    if bad:
        raise UserError(f"WiSE-FT alphas must be in [0, 1], got {bad}")


def _wise_ft(cfg, trainer, run_dir: str | Path, alphas: Sequence[float], datasets: Sequence[str],
             theta0: Optional[Dict[str, torch.Tensor]] = None) -> List[dict]:
    """WiSE-FT with the run's trainer already built (holding theta_0 unless `theta0` is given)."""
    from clip_convpass.data import build_dataset

    if not trainer.trainable_named_parameters():
        raise UserError(f"{trainer.NAME} has no gradient-trained weights to interpolate (WiSE-FT is defined for "
                        f"fine-tuned models; {run_dir} holds a training-free or zero-shot method)")
    if theta0 is None:
        trainer.wise_ft_start()
        theta0 = {n: t.detach().clone() for n, t in trainer.wise_ft_tensors().items()}
    trainer.load_from_model_dir(run_dir)
    trainer.annotations["wise_of"] = checkpoint_digest(run_dir)  # which trained weights (a retrained run differs)
    theta1 = {n: t.detach().clone() for n, t in trainer.wise_ft_tensors().items()}
    targets = list(datasets) or evaluation_domains(cfg.DATASET.NAME)
    built = {name: build_dataset(cfg, name) for name in targets}  # every dataset is checked before any work
    records = []
    for alpha in alphas:
        interpolate_(trainer, theta0, theta1, alpha)
        trainer.annotations["wise_alpha"] = alpha
        for ds in built.values():
            records.append(trainer.test(ds, stage=stage_name(alpha)))
    return records


def is_current(run: Path, targets: Sequence[str], alphas: Sequence[float], zero_shot_templates: str = "run") -> bool:
    """Every alpha's results exist and were made from the run's present weights (not a retrained run's) with the
    same zero-shot end."""
    from clip_convpass.config import flat_items
    from clip_convpass.utils.io import read_json

    run_dir = RunDir(run)
    # a base-to-new cell's evaluations are its base classes' (eval_<stage>/<dataset>-base/)
    sub = flat_items(run_dir.config.read_text()).get("DATASET.SUBSAMPLE", "all") if run_dir.config.is_file() else "all"
    if not run_dir.has_results(targets, [stage_name(a) for a in alphas], subsample=sub):
        return False
    digest = checkpoint_digest(run)
    records = [read_json(run_dir.results(d, stage=stage_name(a), subsample=sub)) for d in targets for a in alphas]
    return all(r.get("wise_of") == digest and r.get("wise_zero_shot_templates", "run") == zero_shot_templates
               for r in records)


def trained_runs(root: str | Path) -> List[Path]:
    """Run directories under a grid's output (config.yaml + checkpoints), sweep points excluded."""
    found = sorted(p.parent for p in Path(root).rglob("checkpoints") if (p.parent / "config.yaml").is_file())
    return [d for d in found if "sweeps" not in d.relative_to(root).parts]


def wise_ft_all(root: str | Path, alphas: Sequence[float], datasets: Sequence[str] = (), data: str = "",
                opts: Sequence[str] = (), zero_shot_templates: str = "run") -> List[Path]:
    """WiSE-FT of every fine-tuned run under `root`; runs whose alphas are all evaluated are skipped,
    training-free methods are listed and left out."""
    check_alphas(alphas)
    done = []
    runs = trained_runs(root)
    if not runs:
        raise UserError(f"no trained run (config.yaml + checkpoints/) under {root}")
    for run in runs:
        cfg, trainer = load_run(run, data, opts)
        targets = list(datasets) or evaluation_domains(cfg.DATASET.NAME)
        if not trainer.trainable_named_parameters():
            print(f"[wiseft] {run}: {cfg.TRAINER.NAME} has no trained weights, left out")
            continue
        templates = zero_shot_templates if has_text_head(cfg, trainer) else "run"
        if templates != zero_shot_templates:
            print(f"[wiseft] {run}: {cfg.TRAINER.NAME} has no text-initialised head: its own start is used")
        if is_current(run, targets, alphas, templates):
            print(f"[wiseft] {run}: every alpha evaluated before, skipping")
        else:
            print(f"[wiseft] {run}: alphas {', '.join(f'{a:g}' for a in alphas)}")
            # the trainer just built holds theta_0 (or the zero-shot head of other templates)
            _wise_ft(cfg, trainer, run, alphas, targets, start_from(run, cfg, trainer, data, opts, templates))
        done.append(run)
    return done


@entry_point
def main(argv: Optional[List[str]] = None) -> int:
    from clip_convpass.utils.logging import setup_logger

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="run directories of trained runs (config.yaml + checkpoints)")
    p.add_argument("--under", default="", help="every fine-tuned run under this output root (e.g. a grid's)")
    p.add_argument("--data", default="", help="DATASET.ROOT (default: the one in each run's config)")
    p.add_argument("--alphas", type=number_list(float), default=list(DEFAULT_ALPHAS), metavar="ALPHA [ALPHA ...]")
    p.add_argument("--datasets", nargs="+", default=[], help="registry names (default: the training dataset "
                                                              "and every dataset that evaluates its models)")
    p.add_argument("--opts", nargs="*", default=[], help="KEY VALUE overrides (e.g. TEST.FEATURE_CACHE_DIR DIR)")
    p.add_argument("--zero-shot-templates", default="run",
                   help="theta_0's head for text-initialised heads: run (default: the run's own templates, so alpha = 0 "
                        "is exactly where it started) or a template set (ensemble80: wise-ft's zero-shot classifier)")
    args = p.parse_args(join_numeric_lists(argv or [], {"--alphas": float}))
    if not args.runs and not args.under:
        p.error("give run directories or --under OUTPUT")
    if args.under and not Path(args.under).is_dir():
        raise UserError(f"--under {args.under}: no such folder (a grid's output root)")
    setup_logger(None)
    for run in args.runs:
        wise_ft(run, args.alphas, args.datasets, args.data, args.opts, args.zero_shot_templates)
    if args.under:
        wise_ft_all(args.under, args.alphas, args.datasets, args.data, args.opts, args.zero_shot_templates)
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
