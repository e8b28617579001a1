"""Systems to and from JSON-serializable configurations (used by model files)."""

from __future__ import annotations

from typing import Any


def system_to_config(system) -> dict[str, Any]:
    """The configuration that `system_from_config` turns back into an equal system."""
    if not hasattr(system, "config"):
        raise TypeError(
            f"{type(system).__name__} cannot be stored in a model file: it has no config(). "
            "Use an OpenMMSystem or a bundled analytic system."
        )
    cfg = dict(system.config())
    if "kind" not in cfg and cfg.get("class") == "OpenMMSystem":
        cfg["kind"] = "openmm"  # OpenMMSystem.config() names its class, not the registry kind
    return cfg


def system_from_config(cfg: dict[str, Any]):
    """Rebuild a system from `system_to_config` output."""
    from ccg.systems.analytic import make_analytic
    from ccg.systems.openmm_system import OpenMMSystem

    kind = cfg.get("kind") if isinstance(cfg, dict) else None
    if kind == "analytic":
        return make_analytic(cfg["name"], **cfg.get("kwargs", {}))
    if kind == "openmm" or (kind is None and isinstance(cfg, dict)
                            and cfg.get("class") == "OpenMMSystem"):
        return OpenMMSystem.from_config(cfg)
    raise ValueError(
        f"Unknown system configuration kind {kind!r}. Expected 'openmm' or 'analytic'; the "
        "model file may come from a newer ccg."
    )
