"""``python -m qsocube.cli``: the ``qsocube`` command."""

from qsocube.cli import main

raise SystemExit(main())
