"""``python -m cifs_edu`` (see :mod:`cifs_edu.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
