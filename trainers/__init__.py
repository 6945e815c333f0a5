"""One file per method; importing this package registers them all."""
from . import convpass_clip, zsclip  # noqa: F401
