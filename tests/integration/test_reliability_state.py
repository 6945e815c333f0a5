"""No stale, foreign or out-of-tree state is used silently: split files, few-shot caches, sweeps, WiSE-FT,
evaluations of a model over other classes or settings, results files; user errors are one line, early."""
import json
import math
import shutil

import pytest
import torch
from conftest import TINY

from clip_convpass.config import ConfigError, dataset_config_file, setup_cfg
from clip_convpass.data import build_dataset
from clip_convpass.data.check import check_dataset
from clip_convpass.data.synthetic import build_synthetic_tree
from clip_convpass.data.types import DatasetLayoutError
from clip_convpass.engine.checkpoint import CheckpointMismatchError, StaleResultsError, latest_checkpoint
from clip_convpass.engine.runner import build_trainer, run
from clip_convpass.utils.errors import UserError

CONVPASS = "configs/trainers/ConvpassCLIP/vit_b16.yaml"
PETL = "configs/trainers/PETLCLIP/adaptformer.yaml"


@pytest.fixture
def pets(tmp_path):
    """A writable synthetic Oxford-Pets tree (CoOp's split-file layout)."""
    info = build_synthetic_tree(tmp_path / "data", num_classes=3, train_per_class=6, val_per_class=2,
                                split_val_per_class=2, source="OxfordPets")
    split = tmp_path / "data" / "oxford_pets" / "split_zhou_OxfordPets.json"
    return info, split


def pets_cfg(root, out, opts=()):
    return setup_cfg(dataset_config_file("OxfordPets"), None, ["DATASET.ROOT", str(root), "DATASET.SPLIT_DIR",
                                                               str(out / "splits"), "DATASET.NUM_SHOTS", "2", *opts])


def edit_split(split, edit):
    data = json.loads(split.read_text())
    edit(data)
    split.write_text(json.dumps(data))


@pytest.mark.parametrize("bad", ["../../outside.jpg", "/etc/passwd", "./../x.jpg"])
def test_split_entries_outside_the_image_folder_are_refused(pets, tmp_path, bad):
    info, split = pets
    edit_split(split, lambda d: d["train"].append([bad, 0, d["train"][0][2]]))
    with pytest.raises(DatasetLayoutError, match="every path must lie inside"):
        build_dataset(pets_cfg(info["root"], tmp_path)).train_x


def test_fgvc_image_ids_with_dotdot_are_refused(tmp_path):
    info = build_synthetic_tree(tmp_path / "data", num_classes=2, train_per_class=3, val_per_class=1,
                                split_val_per_class=1, source="FGVCAircraft")
    lst = tmp_path / "data" / "fgvc_aircraft" / "images_variant_train.txt"
    first = lst.read_text().splitlines()[0].split(" ", 1)[1]
    lst.write_text(lst.read_text() + f"../../secret {first}\n")
    cfg = setup_cfg(dataset_config_file("FGVCAircraft"), None, ["DATASET.ROOT", info["root"]])
    with pytest.raises(DatasetLayoutError, match="'../../secret.jpg'"):
        build_dataset(cfg).test


def test_train_test_overlap_and_indistinguishable_classes_are_refused_duplicates_reported(pets, tmp_path):
    info, split = pets
    original = split.read_text()
    edit_split(split, lambda d: d["test"].append(d["train"][0]))
    with pytest.raises(DatasetLayoutError, match="in both train and test"):
        build_dataset(pets_cfg(info["root"], tmp_path)).test
    split.write_text(original)
    edit_split(split, lambda d: d["train"].append(d["train"][0]))
    ds = build_dataset(pets_cfg(info["root"], tmp_path))
    assert ds.duplicates == {"train": 1} and len(ds._read_train_per_class()[0]) == 6
    assert "train: 1 image(s) listed more than once" in check_dataset("OxfordPets", info["root"])["problem"]
    split.write_text(original)

    def clash(d):  # "abyssinian" vs "Abyssinian": CLIP lower-cases, so no prompt tells them apart
        first = d["train"][0][2]
        for s in ("train", "val", "test"):
            for row in d[s]:
                if row[1] == 1:
                    row[2] = first.capitalize() if first != first.capitalize() else first.lower()
    edit_split(split, clash)
    with pytest.raises(DatasetLayoutError, match="no prompt can tell apart"):
        build_dataset(pets_cfg(info["root"], tmp_path)).classnames


def test_a_few_shot_cache_made_from_another_split_file_is_resampled(pets, tmp_path):
    info, split = pets
    ds = build_dataset(pets_cfg(info["root"], tmp_path))
    shots = {d.impath for d in ds.train_x}
    moved = sorted(shots)[0]
    rel = moved.split("oxford_pets/images/")[-1]

    def to_test(d):  # that shot becomes a test image: a stale cache would keep training on it
        row = next(r for r in d["train"] if r[0] == rel)
        d["train"].remove(row)
        d["test"].append(row)
    edit_split(split, to_test)
    again = build_dataset(pets_cfg(info["root"], tmp_path))
    assert moved not in {d.impath for d in again.train_x} and moved in {d.impath for d in again.test}
    assert json.loads(again.split_file().read_text())["source"] != ""


def tiny_cfg(synth, out, config=CONVPASS, opts=()):
    return setup_cfg("datasets/imagenet.yaml", config,
                     ["DATASET.ROOT", synth["root"], "DATASET.CLASS_LIST", synth["class_list"], "OUTPUT_DIR", str(out),
                      "DATASET.SPLIT_DIR", str(out.parent / "splits"), "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1",
                      "DATALOADER.NUM_WORKERS", "0", "DEVICE", "cpu", *opts], override_files=[TINY])


def test_evaluation_refuses_another_model_or_other_classes(synth, tiny_weights, tmp_path):
    from clip_convpass.cli.train import main

    out = tmp_path / "run"
    run(tiny_cfg(synth, out, PETL, ["MODEL.PRETRAINED", tiny_weights]))
    # the same run evaluated under a different s would be a model that was never trained
    with pytest.raises(CheckpointMismatchError, match="TRAINER.PETL.SCALE"):
        run(tiny_cfg(synth, tmp_path / "ev", PETL, ["MODEL.PRETRAINED", tiny_weights, "TRAINER.PETL.SCALE", "10"]),
            eval_only=True, model_dir=str(out))
    # trained on the base classes: loading it over the new ones outside the transfer path is refused, naming both
    base = tmp_path / "base"
    run(tiny_cfg(synth, base, PETL, ["MODEL.PRETRAINED", tiny_weights, "DATASET.SUBSAMPLE", "base"]))
    new_cfg = tiny_cfg(synth, tmp_path / "ev2", PETL, ["MODEL.PRETRAINED", tiny_weights, "DATASET.SUBSAMPLE", "new"])
    with pytest.raises(CheckpointMismatchError, match="trained over ImageNet's base .* built over ImageNet's new"):
        build_trainer(new_cfg).load_from_model_dir(base)
    # the command line's evaluation of it on the new classes is the transfer evaluation, and says so
    code = main(["--eval-only", "--model-dir", str(base), "--root", synth["root"], "--dataset-config-file",
                 "datasets/imagenet.yaml", "--config-file", PETL, "--config-file", str(TINY), "--output-dir",
                 str(base), "DATASET.CLASS_LIST", synth["class_list"], "MODEL.PRETRAINED", tiny_weights,
                 "DATASET.SUBSAMPLE", "new", "DATASET.NUM_SHOTS", "2", "DEVICE", "cpu"])
    assert code == 0
    rec = json.loads((base / "eval" / "ImageNet-new" / "results.json").read_text())
    assert rec["transfer"] and rec["class_bound_rebuilt"] and rec["subsample"] == "new"
    assert rec["train_classes"]["subsample"] == "base" and rec["eval_classes"]["subsample"] == "new"
    assert rec["train_classes"]["sha256"] != rec["eval_classes"]["sha256"]
    base_rec = json.loads((base / "eval" / "ImageNet-base" / "results.json").read_text())
    assert not base_rec["transfer"] and base_rec["n_classes"] == rec["n_classes"] == 3


def test_an_evaluation_set_over_other_classes_fails_before_training(tmp_path, tiny_weights):
    info = build_synthetic_tree(tmp_path / "data", num_classes=3, train_per_class=4, val_per_class=2,
                                split_val_per_class=2, source="OxfordPets")
    build_synthetic_tree(tmp_path / "data", num_classes=3, source="ImageNet")
    out = tmp_path / "pets_run"
    cfg = setup_cfg(dataset_config_file("OxfordPets"), CONVPASS,
                    ["DATASET.ROOT", info["root"], "OUTPUT_DIR", str(out), "MODEL.PRETRAINED", tiny_weights,
                     "DATASET.NUM_SHOTS", "2", "DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0"], override_files=[TINY])
    with pytest.raises(DatasetLayoutError, match="ImageNetA is not scored over the classes"):
        run(cfg, eval_datasets=["ImageNetA"])
    assert latest_checkpoint(out) is None  # refused before any training


def test_a_missing_test_image_fails_before_training(pets, tmp_path, tiny_weights):
    info, split = pets
    test_image = json.loads(split.read_text())["test"][0][0]
    (split.parent / "images" / test_image).unlink()
    out = tmp_path / "run"
    cfg = setup_cfg(dataset_config_file("OxfordPets"), CONVPASS,
                    ["DATASET.ROOT", info["root"], "OUTPUT_DIR", str(out), "MODEL.PRETRAINED", tiny_weights,
                     "DATASET.NUM_SHOTS", "2", "DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0"], override_files=[TINY])
    with pytest.raises(DatasetLayoutError, match="test images listed .* are missing"):
        run(cfg)
    assert latest_checkpoint(out) is None


def result(tmp_path, name, **changes):
    rec = {"dataset": "ImageNet", "trainer": "ZeroShotCLIP", "name": "ZeroShotCLIP", "seed": 1, "split": "test",
           "metrics": {"top1": 50.0}, **changes}
    path = tmp_path / name / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(rec))
    return path


@pytest.mark.parametrize("changes, match", [
    ({"metrics": {"top1": 150.0}}, "finite percentage"), ({"metrics": {"top1": math.nan}}, "finite percentage"),
    ({"seed": "1"}, "'seed' must be an integer"), ({"metrics": "high"}, "'metrics' must be an object"),
    ({"trainable_params": 5}, "'trainable_params' must be an object"), ({"selected": [1]}, "'selected' must be"),
])
def test_reports_validate_every_results_file(tmp_path, capsys, changes, match):
    from clip_convpass.cli.report import main
    from clip_convpass.reporting.records import ResultsFileError, collect

    result(tmp_path, "good")
    bad = result(tmp_path, "bad", **changes)
    with pytest.raises(ResultsFileError, match=match) as e:
        collect([tmp_path])
    assert str(bad) in str(e.value)
    assert main([str(tmp_path)]) == 2 and capsys.readouterr().err.startswith(f"error: {bad}")


def test_report_json_is_valid_json(tmp_path, capsys):
    from clip_convpass.cli.report import main

    result(tmp_path, "a")
    assert main([str(tmp_path), "--format", "json"]) == 0
    text = capsys.readouterr().out
    assert "NaN" not in text and json.loads(text)


def test_sweep_points_of_another_configuration_are_refused_or_retrained(synth, tiny_weights, tmp_path):
    from clip_convpass.experiments.sweep import run_sweep

    common = ["DATASET.ROOT", synth["root"], "DATASET.CLASS_LIST", synth["class_list"], "DATASET.SPLIT_DIR",
              str(tmp_path / "splits"), "DATASET.NUM_SHOTS", "2", "DATASET.VAL_SHOTS", "1", "OPTIM.MAX_EPOCH", "1",
              "DATALOADER.NUM_WORKERS", "0", "DEVICE", "cpu"]
    grid = {"TRAINER.CONVPASS.SCALE": ["1"]}
    first = run_sweep(grid, tmp_path / "sw", "datasets/imagenet.yaml", CONVPASS,
                      [*common, "MODEL.PRETRAINED", tiny_weights], override_files=[TINY])
    other_weights = tmp_path / "other.pt"
    shutil.copy(tiny_weights, other_weights)
    with pytest.raises(StaleResultsError, match="MODEL.PRETRAINED"):
        run_sweep(grid, tmp_path / "sw", "datasets/imagenet.yaml", CONVPASS,
                  [*common, "MODEL.PRETRAINED", str(other_weights)], override_files=[TINY])
    again = run_sweep(grid, tmp_path / "sw", "datasets/imagenet.yaml", CONVPASS,
                      [*common, "MODEL.PRETRAINED", str(other_weights)], override_files=[TINY], force=True)
    assert again["best"]["point"] == first["best"]["point"]
    assert str(other_weights) in (tmp_path / "sw" / "SCALE=1" / "config.yaml").read_text()


def test_sweep_values_never_leave_the_output_folder(tmp_path):
    from clip_convpass.engine.rundir import sweep_point_dir

    for value in ("../../escape", "/abs/path", "..", "a/b"):
        d = sweep_point_dir(tmp_path / "sw", {"TRAINER.X.KEY": value}).root
        assert d.parent == tmp_path / "sw" and ".." not in d.name.split("=")[-1].split("_")


def test_a_sweep_json_that_sets_other_keys_is_refused(tmp_path):
    from clip_convpass.experiments.grid import select_by_sweep
    from clip_convpass.registry import find_row

    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"best": {"point": {"TRAINER.CONVPASS.SCALE": "1", "SEED": "7"}}}))
    with pytest.raises(ConfigError, match=r"sets \['SEED'\], which row 'ConvpassCLIP' does not sweep"):
        select_by_sweep(find_row("ConvpassCLIP"), 1, str(tmp_path), tmp_path, [], [], "ImageNet", sweep)


def test_wise_ft_under_recomputes_after_the_run_was_retrained(synth, tiny_weights, tmp_path):
    from clip_convpass.experiments.wiseft import wise_ft_all
    from clip_convpass.utils.io import atomic_torch_save

    out = tmp_path / "grid" / "run"
    run(tiny_cfg(synth, out, CONVPASS, ["MODEL.PRETRAINED", tiny_weights]))
    wise_ft_all(tmp_path / "grid", [0.5], ["ImageNet"])
    stamp = (out / "eval_wise0.5" / "ImageNet" / "results.json").stat().st_mtime_ns
    wise_ft_all(tmp_path / "grid", [0.5], ["ImageNet"])
    assert (out / "eval_wise0.5" / "ImageNet" / "results.json").stat().st_mtime_ns == stamp  # same weights: kept
    path = latest_checkpoint(out)  # the run retrained: other weights under the same configuration
    ckpt = torch.load(path, weights_only=True)
    for v in ckpt["state_dict"].values():
        v.add_(0.01)
    atomic_torch_save(path, ckpt)
    wise_ft_all(tmp_path / "grid", [0.5], ["ImageNet"])
    rec = json.loads((out / "eval_wise0.5" / "ImageNet" / "results.json").read_text())
    assert (out / "eval_wise0.5" / "ImageNet" / "results.json").stat().st_mtime_ns != stamp
    from clip_convpass.engine.checkpoint import checkpoint_digest

    assert rec["wise_of"] == checkpoint_digest(out)


@pytest.mark.parametrize("text, match", [
    ("OPTIM: {LR: [unclosed", "is not valid YAML"),
    ("OPTIM: !!python/object/apply:os.system ['true']", "is not valid YAML"),
    ("_BASE_: 5", "_BASE_ must be a path"),
    ("- a list", "must hold a mapping"),
])
def test_bad_yaml_files_are_one_line_errors(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        setup_cfg(None, None, override_files=[path])


@pytest.mark.parametrize("edit, match", [
    (lambda c: c["vision_cfg"].update(patch_size=0), "vision_cfg.patch_size=0"),
    (lambda c: c["text_cfg"].update(width=-32), "text_cfg.width=-32"),
    (lambda c: c.pop("text_cfg"), "needs embed_dim"),
])
def test_model_config_files_are_checked_before_any_work(tmp_path, edit, match):
    from clip_convpass.utils.paths import MODEL_CONFIG_DIR

    config = json.loads((MODEL_CONFIG_DIR / "tiny-ViT-Q.json").read_text())
    edit(config)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=match):
        setup_cfg(None, None, ["MODEL.BACKBONE", "custom", "MODEL.CONFIG_FILE", str(path)])


@pytest.mark.parametrize("command, argv, message", [
    ("clip_convpass.experiments.grid", ["--data", "D", "--output", "O", "--seeds"], "expected one argument"),
    ("clip_convpass.experiments.grid", ["--data", "D", "--output", "O", "--fewshot", "ImageNetA"], "test-only"),
    ("clip_convpass.experiments.wiseft", ["--under", "/nowhere/at/all"], "no such folder"),
    ("clip_convpass.experiments.wiseft", ["RUN", "--alphas"], "expected one argument"),
    ("clip_convpass.cli.report", ["RESULTS", "--methods", "NoSuchRow"], "no row named"),
])
def test_empty_or_unknown_selections_are_errors(tmp_path, capsys, command, argv, message):
    import importlib

    main = importlib.import_module(command).main
    (tmp_path / "r").mkdir()
    result(tmp_path / "r", "x")
    argv = [str(tmp_path / "r") if a == "RESULTS" else a for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors: usage + one line, exit 2
        code = e.code
    assert code == 2 and message in capsys.readouterr().err


def test_numeric_lists_stop_at_the_first_key_value_pair():
    from clip_convpass.utils.args import join_numeric_lists

    argv = ["--data", "D", "--seeds", "1", "2", "MODEL.PRETRAINED", "W", "--output", "O"]
    assert join_numeric_lists(argv, {"--seeds": int}) == ["--data", "D", "--seeds=1,2", "MODEL.PRETRAINED", "W",
                                                           "--output", "O"]


def test_every_command_prints_project_errors_in_one_line(tmp_path, capsys):
    """The shared entry point: a missing or malformed file is `error: ...` and exit 2, never a traceback."""
    import importlib

    bad = tmp_path / "bad.yaml"
    bad.write_text("OPTIM: [")
    cases = [("clip_convpass.experiments.grid", ["--data", str(tmp_path), "--output", str(tmp_path / "o"),
                                                 "--override-config", str(bad), "--methods", "ZeroShotCLIP"]),
             ("clip_convpass.experiments.sweep", ["--root", str(tmp_path), "--output", str(tmp_path / "s"),
                                                  "--override-config", str(bad), "--preset", "ConvpassCLIP"]),
             ("clip_convpass.experiments.headinit", ["--data", str(tmp_path), "--output", str(tmp_path / "h"),
                                                     "--override-config", str(bad)]),
             ("clip_convpass.cli.paths", ["rows", "--table", "nope"]),
             ("clip_convpass.data.check", ["--root", str(tmp_path), "--datasets", "NoSuchDataset"])]
    for command, argv in cases:
        code = importlib.import_module(command).main(argv)
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (command, err)


@pytest.mark.slow
def test_two_grids_into_one_output_run_every_cell_once(synth, tiny_weights, tmp_path):
    import subprocess
    import sys

    argv = [sys.executable, "-m", "clip_convpass", "grid", "--data", synth["root"], "--output", str(tmp_path / "g"),
            "--methods", "CoOp", "--seeds", "1", "2", "--override-config", str(TINY), "DATASET.CLASS_LIST",
            synth["class_list"], "MODEL.PRETRAINED", tiny_weights, "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "2",
            "DATALOADER.NUM_WORKERS", "0", "DATASET.SPLIT_DIR", str(tmp_path / "splits")]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    logs = sorted((tmp_path / "g").rglob("log.txt"))
    assert len(logs) == 2
    for log in logs:  # each cell trained exactly once, by one of the two processes
        assert log.read_text().count("=" * 20 + " run " + "=" * 20) == 1
    assert len(list((tmp_path / "g").rglob("eval/ImageNet/results.json"))) == 2


def test_old_import_paths_still_work():
    from clip_convpass.cli import main as train_main
    from clip_convpass.cli.train import main
    from clip_convpass.utils import atomic_write_json, setup_logger
    from clip_convpass.utils.io import atomic_write_json as moved
    from clip_convpass.utils.logging import setup_logger as moved_logger

    assert train_main is main and atomic_write_json is moved and setup_logger is moved_logger


def test_user_errors_are_user_errors():
    assert issubclass(StaleResultsError, UserError) and issubclass(CheckpointMismatchError, UserError)


@pytest.mark.parametrize("opts, match", [(["DATALOADER.NUM_WORKERS", "100000"], "NUM_WORKERS must be in 0..256"),
                                         (["SEED", "-3"], "SEED must be an integer"),
                                         (["SEED", str(2**40)], "SEED must be an integer")])
def test_absurd_workers_or_seeds_are_refused(opts, match):
    with pytest.raises(ConfigError, match=match):
        setup_cfg(None, None, opts)


def test_a_model_dir_without_checkpoint_is_one_line(synth, tmp_path, capsys):
    from clip_convpass.cli.train import main

    code = main(["--eval-only", "--model-dir", str(tmp_path / "empty"), "--root", synth["root"],
                 "--dataset-config-file", "datasets/imagenet.yaml", "--config-file", CONVPASS, "--config-file",
                 str(TINY), "--output-dir", str(tmp_path / "ev"), "DATASET.CLASS_LIST", synth["class_list"],
                 "MODEL.PRETRAINED", "none"])
    err = capsys.readouterr().err
    assert code == 2 and "No checkpoint in" in err and "Traceback" not in err
