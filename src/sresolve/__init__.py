"""sresolve: image super-resolution research toolkit."""

__version__ = "0.1.0"
