"""One file per method, each registered in registry.TRAINER_REGISTRY (every module here is imported when
the registry is first asked); its rows are in configs/trainers/<NAME>/metafile.yaml."""
