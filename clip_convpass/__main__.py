"""`python -m clip_convpass <command> ...`: the clip-convpass console command."""
from clip_convpass.cli.command import main

raise SystemExit(main())
