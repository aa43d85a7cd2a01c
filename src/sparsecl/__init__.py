"""sparsecl: sparse training and sparse continual learning on one engine.

Importing the package has no side effects: no threads set, no files touched, no RNG seeded.
"""

__version__ = "0.1.0"
