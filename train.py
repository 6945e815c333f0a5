#!/usr/bin/env python
"""Train and/or evaluate one method on one dataset (Dassl/CoOp-style command line); see clip_convpass.cli."""
import sys

from clip_convpass.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
