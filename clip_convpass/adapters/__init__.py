"""Adapters for CLIP's image encoder: one kind per file, registered in base.ADAPTER_REGISTRY.

The kinds are imported by `base.load_adapters()` (not here, so that model code such as
clip_convpass.convpass can import base without a cycle)."""

ADAPTER_MODULES = ("convpass", "adaptformer", "adapter", "lora", "vpt", "bitfit")
