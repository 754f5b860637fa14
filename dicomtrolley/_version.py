"""The package version: a leaf module that every other module may import."""

__version__ = "5.0.0.dev0"
