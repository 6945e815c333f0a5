"""Entry points only: the clip-convpass command (command.py), train, params, report and the scripts' paths helper."""


def __getattr__(name):  # `from clip_convpass.cli import main`: train.py's entry point, as before the layers
    if name == "main":
        from clip_convpass.cli.train import main

        return main
    raise AttributeError(f"module 'clip_convpass.cli' has no attribute {name!r}")
