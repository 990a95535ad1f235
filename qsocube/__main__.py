"""``python -m qsocube``: the ``qsocube`` command."""

from qsocube.cli import main

raise SystemExit(main())
