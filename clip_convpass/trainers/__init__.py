"""One file per method; importing this package registers them all."""
from . import cocoop, convpass_clip, coop, linear_probe, petl_clip, tip_adapter, zsclip  # noqa: F401
