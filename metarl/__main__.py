"""`python -m metarl` = the `metarl` console script."""

from metarl.cli import main

raise SystemExit(main())
