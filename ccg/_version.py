"""The version of ccg (read by the build from here, without importing ccg)."""

__version__ = "0.1.0"
