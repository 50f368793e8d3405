"""``python -m cifs_edu`` (see :mod:`cifs_edu.tools.cli`)."""
import sys

from .tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
