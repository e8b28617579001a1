"""ccg: invertible ("cycle") coarse graining of molecules with conditional normalizing flows.

Units throughout: positions in nm, energies in kJ/mol, temperatures in K, angles in rad.
"""

__version__ = "0.1.0"

from ccg.constants import KB_KJMOL_PER_K, beta_from_temperature

__all__ = ["KB_KJMOL_PER_K", "__version__", "beta_from_temperature"]
