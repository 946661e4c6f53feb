"""`python -m paper` is `cffdyn paper`."""
import sys

from paper.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m paper"))
