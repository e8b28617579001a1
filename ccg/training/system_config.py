"""The `[system]` table of a training configuration: what U(x) is (a registered system, a
peptide sequence or a PDB file, with force-field files and an implicit-solvent model),
validated before any work starts (`ccg.training.config.RunConfig` holds it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccg._checks import check_field_types
from ccg.errors import ConfigError
from ccg.systems.forcefields import IMPLICIT_SOLVENT_MODELS
from ccg.systems.peptides import check_hydrogens, check_sequence
from ccg.systems.registry import SYSTEMS

DEFAULT_SYSTEM = "alanine-dipeptide"
"""The system of a configuration that names none."""


@dataclass
class SystemConfig:
    """The target system (`[system]`): a registered `name` (`ccg.systems.SYSTEMS`), a peptide
    `sequence`, or a `pdb`, with `forcefield` files and an `implicit_solvent` model."""

    name: str | None = None
    """A registered system: alanine-dipeptide (the default without a pdb or sequence),
    ala3-obc2, ..., harmonic, double-well, mueller-brown."""
    pdb: str | None = None
    """A PDB file (instead of a registered `name`); it needs every hydrogen unless
    `add_hydrogens`."""
    sequence: str | None = None
    """A peptide in one-letter codes, e.g. "AAA": built with ACE/NME caps, extended, every
    hydrogen added and minimized in the force field (`ccg.systems.build_peptide`)."""
    forcefield: list[str] = field(default_factory=lambda: ["amber99sbildn.xml"])
    """OpenMM force-field XML files for `pdb` or `sequence`."""
    implicit_solvent: str | None = None
    """"obc2", "gbn2" or "none" (vacuum), added to `forcefield` (see
    `ccg.systems.forcefield_files`). Unset: "obc2" for a sequence; for a pdb the
    `forcefield` files exactly as listed."""
    add_hydrogens: bool = False
    """pdb: add missing hydrogens (OpenMM Modeller, pH 7) and minimize the structure."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the system's builder (`OpenMMSystem.from_pdb` for a pdb,
    `build_peptide` for a sequence, `prepare_pdb` for a pdb with implicit_solvent or
    add_hydrogens)."""

    def validate(self) -> SystemConfig:
        check_field_types(self, "system")
        given = [f'{key} = "{getattr(self, key)}"' for key in ("name", "pdb", "sequence")
                 if getattr(self, key) is not None]
        if len(given) > 1:
            raise ConfigError(f"[system] gives {' and '.join(given)}; keep one of them "
                              "(ccg train: one of --system, --pdb, --sequence).")
        if self.pdb is None and self.sequence is None and self.registered_name not in SYSTEMS:
            raise ConfigError(
                f'Unknown system "{self.name}". Must be one of {SYSTEMS.names()}, '
                "or give [system] pdb = 'file.pdb' or sequence = 'AAA' with forcefield = [...]."
            )
        if self.implicit_solvent is not None and (
                self.implicit_solvent not in IMPLICIT_SOLVENT_MODELS):
            raise ConfigError(
                f'[system] implicit_solvent must be one of {list(IMPLICIT_SOLVENT_MODELS)}; got '
                f'"{self.implicit_solvent}" (ccg train --implicit-solvent).'
            )
        if self.implicit_solvent is not None and self.pdb is None and self.sequence is None:
            raise ConfigError(
                "[system] implicit_solvent is for a pdb or a sequence; a registered system "
                f'("{self.registered_name}") has its own. Fix: drop --implicit-solvent, or '
                "choose a registered system with it in the name (e.g. ala3-gbn2)."
            )
        if self.add_hydrogens and self.pdb is None:
            raise ConfigError("[system] add_hydrogens is for a pdb (--pdb); a sequence gets "
                              "every hydrogen anyway. Fix: drop --add-hydrogens.")
        if self.sequence is not None:
            try:
                check_sequence(self.sequence)
            except ConfigError as err:
                raise ConfigError(f"[system] sequence (--sequence): {err}") from None
        if self.pdb is not None:
            if not Path(self.pdb).is_file():
                raise ConfigError(f"[system] pdb file not found: {self.pdb}")
            check_hydrogens(self.pdb, self.add_hydrogens)
        return self

    @property
    def registered_name(self) -> str:
        """The registered system this configuration names (the default if none)."""
        return self.name if self.name is not None else DEFAULT_SYSTEM

    @property
    def label(self) -> str:
        """What to call the system in messages: the PDB file's name, the peptide's sequence,
        or the system's name."""
        if self.pdb is not None:
            return Path(self.pdb).name
        if self.sequence is not None:
            return f"peptide {self.sequence.strip().upper()}"
        return self.registered_name

    @property
    def kind(self) -> str:
        """"molecular" or "analytic"."""
        if self.pdb is not None or self.sequence is not None:
            return "molecular"
        return SYSTEMS.info(self.registered_name)["kind"]

    @property
    def default_map(self) -> str:
        """The CG map a run of this system uses unless told otherwise."""
        if self.pdb is not None or self.sequence is not None:
            return "phi-psi"
        return SYSTEMS.info(self.registered_name)["default_map"]
