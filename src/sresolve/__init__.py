"""sresolve: image super-resolution research toolkit (Lightning + Hydra)."""

import os as _os

# OpenMP threads that spin while waiting make torch's CPU ops 10-60x slower as soon as another process (a DataLoader
# worker, a second job) needs a core; sleeping waiters cost ~nothing when the machine is quiet. Only a default: it
# must be set before torch loads its OpenMP runtime, and an explicit setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
