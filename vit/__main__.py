"""`python -m vit` is `cffdyn vit`."""
import sys

from vit.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m vit"))
