"""clip-convpass: parameter-efficient transfer and domain generalization of CLIP."""
__version__ = "0.1.0"
