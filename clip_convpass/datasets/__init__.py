"""One file per dataset, each registered in registry.DATASET_REGISTRY (every module here is imported when
the registry is first asked); its YAML is configs/datasets/<name>.yaml."""
