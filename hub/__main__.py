"""`python -m hub` (and the `emp-hub` console script, which calls `main`)."""

from __future__ import annotations

from hub.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
