"""`python -m emp`: the same command line as the `emp` console script."""

from emp.cli import main

raise SystemExit(main())
