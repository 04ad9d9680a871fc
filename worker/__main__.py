"""`python -m worker`: same entry point as the `emp-worker` script and worker.pyz."""

import sys

from worker.cli import main

if __name__ == "__main__":
    sys.exit(main())
