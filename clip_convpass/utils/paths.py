"""Where the package's data files are: configs (installed with it; the top-level configs/ links here) and
open_clip model-config JSONs."""
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CONFIG_DIR = PACKAGE_DIR / "configs"
MODEL_CONFIG_DIR = PACKAGE_DIR / "model_configs"
