"""Entry points only: the clip-convpass command (main), train, params, report and the scripts' paths helper."""
