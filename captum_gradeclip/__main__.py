"""``python -m captum_gradeclip <command>``: see :mod:`captum_gradeclip.cli.main`."""

from __future__ import annotations

from captum_gradeclip.cli.main import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
