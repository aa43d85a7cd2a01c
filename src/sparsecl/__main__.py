"""``python -m sparsecl`` (what ``torchrun -m sparsecl`` runs in each process)."""

import sys

from sparsecl.cli import main

sys.exit(main())
