"""`python -m sim` is `cffdyn sim`."""
import sys

from cffdyn.errors import guarded
from sim.cli import main

if __name__ == "__main__":
    sys.exit(guarded(lambda a: main(a, prog="python -m sim"), None, "python -m sim", resumable=True))
