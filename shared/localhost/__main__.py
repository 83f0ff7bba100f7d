"""``python -m shared.localhost``: see ``shared.localhost.cli``."""

import sys

from shared.localhost.cli import main

if __name__ == "__main__":
    sys.exit(main())
