"""CG maps and the exact split x <-> (z, r, log|J|).

- `CGMap`: the interface (`coarse_grain`, `split`, `merge`, `cg_features`, `config`);
  `map_from_config` rebuilds any registered map.
- `ZMatrix`: batched internal coordinates with log|det J|, built from a bond graph.
- `TorsionMap`: z = named torsions (φ, ψ); `AtomSubsetMap`: z = CG atom positions;
  `CoordinateSplitMap`: z = the first coordinates of an analytic system.
- peptide torsions by residue (`peptide_torsions`, `resolve_torsions`, `peptide_torsion_map`):
  the "backbone-torsions" and "torsions" maps; "ca" (one bead per C-alpha) is a bead map.
- chirality: `find_chiral_centers`, `chirality_signs`, half-range torsion helpers.

Convention: log_jac = log|det ∂x/∂(z, r)| in both `split` and `merge`.
"""

from ccg.mapping.base import CG_MAPS, MAP_TYPES, CGMap, map_from_config, register_map
from ccg.mapping.beads import AtomSubsetMap
from ccg.mapping.chirality import (
    HALF_RANGE_LOG_JAC,
    ChiralCenter,
    chirality_signs,
    find_chiral_centers,
    half_range_to_torsion,
    torsion_to_half_range,
)
from ccg.mapping.peptide import (
    TORSION_KINDS,
    backbone_torsions,
    peptide_torsion_map,
    peptide_torsions,
    resolve_torsions,
)
from ccg.mapping.split import CoordinateSplitMap
from ccg.mapping.torsion import (
    LOG_RIGID_BODY_ROTATIONS,
    TorsionMap,
    backbone_contact_pairs,
    torsion_map_for,
)
from ccg.mapping.zmatrix import InternalCoordinates, ZMatrix, bond_angle, dihedral

__all__ = [
    "CG_MAPS",
    "HALF_RANGE_LOG_JAC",
    "LOG_RIGID_BODY_ROTATIONS",
    "MAP_TYPES",
    "TORSION_KINDS",
    "AtomSubsetMap",
    "CGMap",
    "ChiralCenter",
    "CoordinateSplitMap",
    "InternalCoordinates",
    "TorsionMap",
    "ZMatrix",
    "backbone_contact_pairs",
    "backbone_torsions",
    "bond_angle",
    "chirality_signs",
    "dihedral",
    "find_chiral_centers",
    "half_range_to_torsion",
    "map_from_config",
    "peptide_torsion_map",
    "peptide_torsions",
    "register_map",
    "resolve_torsions",
    "torsion_map_for",
    "torsion_to_half_range",
]
