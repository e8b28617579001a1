"""Implementations of `ccg` subcommands that are not part of a library module."""
