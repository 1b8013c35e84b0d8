"""`python -m latentds ...` (also what `torchrun -m latentds ...` runs)."""

from latentds.cli import main

raise SystemExit(main())
