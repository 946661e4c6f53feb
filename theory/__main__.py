"""`python -m theory` is `cffdyn theory`."""
import sys

from cffdyn.errors import guarded
from theory.cli import main

if __name__ == "__main__":
    sys.exit(guarded(lambda a: main(a, prog="python -m theory"), None, "python -m theory"))
