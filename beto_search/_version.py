"""The package version, in a leaf module so that the index core can stamp it without importing the package root."""

__version__ = "0.1.0"
