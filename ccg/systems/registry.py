"""The system registries and systems to and from JSON-serializable configurations.

- `SYSTEMS`: the named systems a configuration can ask for (`[system] name = ...`, `ccg train
  --system`). Each entry is a function `(**options) -> System`, registered with `kind`
  ("molecular" or "analytic") and the `default_map` a run uses when none is given.
- `SYSTEM_KINDS`: the classes a model file can store, each with `config()` and a
  `from_config(cfg)` classmethod; `system_to_config` / `system_from_config` use it.

Registering a new system is one decorated function next to it (see `ccg.systems.alanine`).
"""

from __future__ import annotations

from typing import Any

from ccg.registry import Registry

SYSTEMS: Registry = Registry("system")
"""Named systems: name -> builder `(**options) -> System` (info: kind, default_map)."""

SYSTEM_KINDS: Registry = Registry("system kind")
"""Serializable system classes: config "kind" -> class with `from_config(cfg)`."""


def system_to_config(system) -> dict[str, Any]:
    """The configuration that `system_from_config` turns back into an equal system."""
    kinds = [name for name, cls in SYSTEM_KINDS.items() if isinstance(system, cls)]
    if not kinds:
        raise TypeError(
            f"{type(system).__name__} cannot be stored in a model file: it is none of the "
            f"serializable system classes ({', '.join(c.__name__ for c in SYSTEM_KINDS.values())})."
            " Use an OpenMMSystem or a bundled analytic system."
        )
    return {**system.config(), "kind": kinds[0]}


def system_from_config(cfg: dict[str, Any]):
    """Rebuild a system from `system_to_config` output."""
    if not isinstance(cfg, dict):
        raise ValueError(f"Expected a system configuration dict; got {type(cfg).__name__}.")
    kind = cfg.get("kind")
    if kind is None and cfg.get("class") == "OpenMMSystem":  # files of ccg 0.1 before "kind"
        kind = "openmm"
    if kind not in SYSTEM_KINDS:
        raise ValueError(
            f"Unknown system configuration kind {kind!r}. Expected one of "
            f"{SYSTEM_KINDS.names()}; the model file may come from a newer ccg."
        )
    return SYSTEM_KINDS[kind].from_config(cfg)
