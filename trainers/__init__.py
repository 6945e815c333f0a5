"""One file per method; importing this package registers them all."""
from . import zsclip  # noqa: F401
