"""`python -m vit` is `cffdyn vit`."""
import sys

from cffdyn.errors import guarded
from vit.cli import main

if __name__ == "__main__":
    sys.exit(guarded(lambda a: main(a, prog="python -m vit"), None, "python -m vit", resumable=True))
