"""``python -m recsim_ft``: the same as the ``recsim-ft`` command."""

from recsim_ft.cli import main

raise SystemExit(main())
