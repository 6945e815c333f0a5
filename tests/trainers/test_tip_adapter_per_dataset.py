"""Tip-Adapter(-F)'s per-dataset settings equal the reference's configs (gaopengcuhk/Tip-Adapter configs/*.yaml)."""
import pytest

from clip_convpass.config import dataset_config_file, setup_cfg
from clip_convpass.trainers.tip_adapter import search_grid

# Transcribed from Tip-Adapter/configs/<file>.yaml: (file, search_scale [beta, alpha], search_step, init_beta,
# init_alpha, train_epoch); lr 0.001 and augment_epoch 10 in every file.
REFERENCE = {
    "ImageNet": ("imagenet", (7, 3), (200, 20), 1, 1.17, 20),
    "Caltech101": ("caltech101", (12, 5), (200, 20), 1, 3, 20),
    "DescribableTextures": ("dtd", (13, 13), (200, 20), 1, 2, 20),
    "EuroSAT": ("eurosat", (12, 10), (200, 20), 1, 2, 100),
    "FGVCAircraft": ("fgvc", (30, 30), (200, 20), 1, 5, 20),
    "Food101": ("food101", (10, 10), (200, 20), 1, 1.17, 20),
    "OxfordFlowers": ("oxford_flowers", (50, 50), (200, 20), 1, 10, 20),
    "OxfordPets": ("oxford_pets", (7, 3), (200, 20), 1, 1.17, 20),
    "StanfordCars": ("stanford_cars", (20, 10), (200, 20), 1, 3, 20),
    "SUN397": ("sun397", (12, 10), (200, 20), 1, 1.17, 20),
    "UCF101": ("ucf101", (7, 3), (200, 20), 1, 3, 20),
}


def reference_grid(scale, steps):
    """utils.py search_hp: [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]."""
    return [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]


@pytest.mark.parametrize("dataset", sorted(REFERENCE))
@pytest.mark.parametrize("method", ["TipAdapter", "TipAdapterF"])
def test_effective_settings_equal_the_reference_config(dataset, method):
    _, (beta_max, alpha_max), (beta_steps, alpha_steps), init_beta, init_alpha, train_epoch = REFERENCE[dataset]
    cfg = setup_cfg(dataset_config_file(dataset), f"trainers/{method}/vit_b16.yaml")
    tip = cfg.TRAINER.TIP
    assert (tip.INIT_ALPHA, tip.INIT_BETA, tip.AUGMENT_EPOCH) == (init_alpha, init_beta, 10)
    assert search_grid(*tip.BETA_RANGE, tip.BETA_STEPS) == pytest.approx(reference_grid(beta_max, beta_steps))
    assert search_grid(*tip.ALPHA_RANGE, tip.ALPHA_STEPS) == pytest.approx(reference_grid(alpha_max, alpha_steps))
    if method == "TipAdapterF":
        assert (cfg.OPTIM.MAX_EPOCH, cfg.OPTIM.LR) == (train_epoch, 0.001)


def test_command_line_opts_override_the_per_dataset_settings():
    cfg = setup_cfg(dataset_config_file("OxfordFlowers"), "trainers/TipAdapter/vit_b16.yaml",
                    ["TRAINER.TIP.INIT_ALPHA", "2.5"])
    assert cfg.TRAINER.TIP.INIT_ALPHA == 2.5 and tuple(cfg.TRAINER.TIP.BETA_RANGE) == (0.1, 50.0)


def test_a_missing_per_dataset_folder_is_a_one_line_error(tmp_path):
    from clip_convpass.config import ConfigError

    method = tmp_path / "method.yaml"
    method.write_text("TRAINER:\n  NAME: TipAdapter\nPER_DATASET_DIRS: ['trainers/nowhere']\n")
    with pytest.raises(ConfigError, match="PER_DATASET_DIRS: .*nowhere is not a folder"):
        setup_cfg(None, method)


def test_per_dataset_dirs_come_from_the_methods_yaml_only(tmp_path):
    from clip_convpass.config import ConfigError

    with pytest.raises(ConfigError, match="PER_DATASET_DIRS belongs to a method's YAML"):
        setup_cfg(None, "trainers/TipAdapter/vit_b16.yaml", ["PER_DATASET_DIRS", "[]"])
    override = tmp_path / "o.yaml"
    override.write_text("PER_DATASET_DIRS: []\n")
    with pytest.raises(ConfigError, match="PER_DATASET_DIRS belongs to a method's YAML"):
        setup_cfg(None, "trainers/TipAdapter/vit_b16.yaml", override_files=[override])
