"""`python -m paper` is `cffdyn paper`."""
import sys

from cffdyn.errors import guarded
from paper.cli import main

if __name__ == "__main__":
    sys.exit(guarded(lambda a: main(a, prog="python -m paper"), None, "python -m paper", resumable=True))
