"""`python harness/mlmark.py -c CONFIG...`, exactly as MLMark users type it."""

import os
import sys

if __name__ == "__main__":
    # Run as a script, Python puts harness/ first on sys.path, where its modules would shadow
    # top-level names; the repository root is what the installed package resolves to anyway.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    from harness.cli import main

    sys.exit(main())
