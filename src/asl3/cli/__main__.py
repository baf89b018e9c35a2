"""`python -m asl3.cli`."""

from asl3.cli import main

raise SystemExit(main())
