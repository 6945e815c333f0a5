#!/usr/bin/env python
"""Train and/or evaluate one method on one dataset (Dassl/CoOp-style command line)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # local datasets/ and trainers/ win over installed ones

from clip_convpass.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
