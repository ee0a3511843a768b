"""``python -m halfv.cli``: the ``halfv`` command."""

from __future__ import annotations

import sys

from halfv.cli import main

if __name__ == "__main__":
    sys.exit(main())
