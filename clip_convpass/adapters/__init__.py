"""Adapters for a Vision Transformer's blocks: the injection layer (base.py, peft's tuners) and one kind per
file, each registered in registry.ADAPTER_REGISTRY (every module here is imported when the registry is
first asked)."""
