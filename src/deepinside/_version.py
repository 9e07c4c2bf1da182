"""The package version (one place: read by the package and its caches without importing it)."""

__version__ = "0.1.0"
