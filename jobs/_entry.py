"""Shared by the entry scripts: make the working directory importable, then hand over to the CLI."""

import sys
from pathlib import Path


def run(command: str) -> None:
    root = str(Path(__file__).resolve().parent.parent)  # the --working-dir of `ray job submit`
    if root not in sys.path:
        sys.path.insert(0, root)
    from itool_ray.cli import main

    sys.exit(main([command, *sys.argv[1:]]))
