"""GFN2-xTB relaxation energy (``tblite``): how far a generated geometry is from its nearest minimum.

The corrected GEOM-Drugs protocol (Nikitin et al. 2025) runs ``xtb --opt`` (GFN2, "normal" convergence, all
atoms, charge = the sum of formal charges, closed shell, gas phase) and reports E(given) - E(relaxed) in
kcal/mol. Here tblite gives the same Hamiltonian's energy and gradient and SciPy's L-BFGS minimises in
Cartesian coordinates to xtb's "normal" gradient threshold (1e-3 Eh/bohr). The optimiser differs from xtb's
ANCopt, so a value can differ slightly from xtb's for floppy molecules; the energy surface is the same.
"""

from __future__ import annotations

import numpy as np
from rdkit import Chem
from scipy.optimize import minimize

HARTREE_TO_KCAL = 627.509474
ANGSTROM_TO_BOHR = 1 / 0.529177210903
GRADIENT_TOLERANCE = 1e-3  # Eh/bohr: xtb's "normal" optimisation level


def _calculator(numbers: np.ndarray, bohr: np.ndarray, charge: int):
    from tblite.interface import Calculator  # a compiled extension: loaded only when energies are asked for

    calc = Calculator("GFN2-xTB", numbers, bohr, charge=float(charge), uhf=0)
    calc.set("verbosity", 0)
    return calc


def gfn2_energy(numbers: np.ndarray, positions: np.ndarray, charge: int = 0) -> tuple[float, np.ndarray]:
    """Energy (Eh) and gradient (Eh/bohr, ``(n, 3)``) at ``positions`` (Angstrom)."""
    bohr = np.asarray(positions, np.float64) * ANGSTROM_TO_BOHR
    result = _calculator(np.asarray(numbers), bohr, charge).singlepoint()
    return float(result.get("energy")), np.asarray(result.get("gradient"))


def relax(
    numbers: np.ndarray, positions: np.ndarray, charge: int = 0, max_steps: int = 500
) -> tuple[float, float, np.ndarray, bool]:
    """(E at the given geometry, E relaxed) in Eh, the relaxed positions (Angstrom) and whether the gradient
    fell below :data:`GRADIENT_TOLERANCE`."""
    numbers = np.asarray(numbers)
    x0 = np.asarray(positions, np.float64).ravel() * ANGSTROM_TO_BOHR
    calc = _calculator(numbers, x0.reshape(-1, 3), charge)
    result = calc.singlepoint()
    start = float(result.get("energy"))

    def energy_and_gradient(x: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal result
        calc.update(x.reshape(-1, 3))
        result = calc.singlepoint(result)  # restart from the last wavefunction: fewer SCC iterations
        return float(result.get("energy")), np.asarray(result.get("gradient")).ravel()

    # L-BFGS stops on the largest gradient component (pgtol), as xtb's threshold
    opt = minimize(
        energy_and_gradient, x0, jac=True, method="L-BFGS-B", options={"gtol": GRADIENT_TOLERANCE, "maxiter": max_steps}
    )
    converged = bool(np.abs(opt.jac).max() <= GRADIENT_TOLERANCE)
    return start, float(opt.fun), opt.x.reshape(-1, 3) / ANGSTROM_TO_BOHR, converged


def relaxation_energy(mol: Chem.Mol, max_steps: int = 500) -> float | None:
    """E(given) - E(GFN2-xTB relaxed) in kcal/mol of an RDKit molecule with explicit hydrogens and a conformer;
    None when the SCC or the optimisation fails (e.g. overlapping atoms) or does not converge."""
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    charge = sum(a.GetFormalCharge() for a in mol.GetAtoms())
    try:
        e0, e1, _, converged = relax(numbers, mol.GetConformer().GetPositions(), charge, max_steps)
    except RuntimeError:  # tblite raises on SCC failure
        return None
    if not converged or not np.isfinite(e0 - e1):
        return None
    return (e0 - e1) * HARTREE_TO_KCAL
