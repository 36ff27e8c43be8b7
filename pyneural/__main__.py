"""``python -m pyneural``: the same entry point as the ``pyneural`` console script."""
import sys

from pyneural.cli import main

if __name__ == "__main__":
    sys.exit(main())
