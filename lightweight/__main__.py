"""``python -m lightweight`` runs the command line (same as the ``lightweight`` command)."""

from .cli import main

raise SystemExit(main())
