"""A run's configuration: engine defaults and YAML / `_BASE_` / opts merging (defaults.py), every method's
own node put together and validated (compose.py), hashing. Import from here."""
from clip_convpass.config.compose import (
    dataset_config_file,
    dataset_config_files,
    get_cfg_default,
    method_config_nodes,
    setup_cfg,
    validate_cfg,
)
from clip_convpass.config.defaults import (
    CLIP_MEAN,
    CLIP_STD,
    CONFIG_DIR,
    LOCATION_KEYS,
    NEUTRAL_KEYS,
    NOT_EXPERIMENT_KEYS,
    PATH_KEYS,
    VALID_PREC,
    VALID_TRANSFORMS,
    ConfigError,
    apply_epochs_by_shots,
    check,
    check_crop_scale,
    config_hash,
    engine_defaults,
    expand_user_paths,
    experiment_hash,
    flat_items,
    merge_config_file,
    merge_opts,
    merge_per_dataset_configs,
    parse_epochs_by_shots,
    read_model_config,
    read_yaml,
    resolve_config_path,
    validate_engine_cfg,
)

__all__ = [
    "CLIP_MEAN", "CLIP_STD", "CONFIG_DIR", "LOCATION_KEYS", "NEUTRAL_KEYS", "NOT_EXPERIMENT_KEYS",
    "PATH_KEYS", "VALID_PREC", "VALID_TRANSFORMS", "ConfigError", "apply_epochs_by_shots", "check",
    "check_crop_scale", "config_hash", "dataset_config_file", "dataset_config_files", "engine_defaults",
    "expand_user_paths", "experiment_hash", "flat_items", "get_cfg_default", "merge_config_file",
    "merge_opts", "merge_per_dataset_configs", "method_config_nodes", "parse_epochs_by_shots", "read_model_config", "read_yaml",
    "resolve_config_path", "setup_cfg", "validate_cfg", "validate_engine_cfg",
]
