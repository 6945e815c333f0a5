"""`python -m clip_convpass.cli`: one run (train.py), as before the package had layers."""
from clip_convpass.cli.train import main

raise SystemExit(main())
