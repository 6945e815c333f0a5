"""One file per dataset; importing this package registers them all."""
from . import imagenet, imagenet_a, imagenet_r, imagenet_sketch, imagenet_v2  # noqa: F401
