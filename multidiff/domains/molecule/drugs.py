"""A small drug-like set: RDKit's own NCI sample (``RDConfig.RDDataDir/NCI/first_5K.smi``) with one
ETKDG conformer per molecule, MMFF-relaxed, explicit hydrogens (a GEOM-like stand-in that needs no
download). Molecules with heavy atoms outside C N O F S Cl Br P I are dropped; salts keep their
largest fragment. Conditioning properties are RDKit descriptors of the same molecules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rdkit import Chem, RDConfig
from rdkit.Chem import QED, AllChem, Crippen, Descriptors, rdMolDescriptors
from tqdm import tqdm

from .data import MoleculeDataModule
from .elements import DRUG_ELEMENTS
from .packing import Packer
from .structures import largest_fragment

PROPERTIES: dict[str, tuple[Any, str]] = {
    "logp": (Crippen.MolLogP, ""),
    "tpsa": (rdMolDescriptors.CalcTPSA, "A^2"),
    "mw": (Descriptors.MolWt, "g/mol"),
    "qed": (QED.qed, ""),
}


def default_source() -> Path:
    return Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


def conformer(smiles: str, seed: int = 0, max_heavy_atoms: int = 60) -> Chem.Mol | None:
    """Largest fragment with explicit H and one MMFF-relaxed ETKDG conformer; None when it fails."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    mol = largest_fragment(mol)
    Chem.SanitizeMol(mol)
    if mol.GetNumAtoms() > max_heavy_atoms or mol.GetNumAtoms() < 2:
        return None
    if any(a.GetSymbol() not in DRUG_ELEMENTS for a in mol.GetAtoms()):
        return None
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        return None
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    return mol


def read_drugs(source: Path, limit: int | None = None, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    lines = [ln.split()[0] for ln in Path(source).read_text().splitlines() if ln.strip()]
    lines = lines[:limit] if limit else lines
    packer = Packer(list(PROPERTIES), DRUG_ELEMENTS)
    for smiles in tqdm(lines, desc="drugs: conformers", disable=not progress):
        mol = conformer(smiles, seed)
        if mol is not None:
            packer.add_mol(mol, [f(Chem.RemoveHs(mol)) for f, _ in PROPERTIES.values()])
    n = len(packer)
    perm = np.random.RandomState(seed).permutation(n)
    n_val = n_test = n // 10
    return packer.pack({"train": perm[n_val + n_test :], "val": perm[:n_val], "test": perm[n_val : n_val + n_test]})


class DrugsDataModule(MoleculeDataModule):
    """Drug-like molecules with RDKit conformers (80/10/10 split, seed 0).

    Config keys as :class:`~.data.MoleculeDataModule` plus ``source`` (a ``.smi`` file; default
    RDKit's NCI sample) and ``limit`` (use only the first N SMILES; changes the cache file).
    """

    name = "drugs"
    property_names = tuple(PROPERTIES)

    def __init__(
        self, root: str | Path, source: str | Path | None = None, limit: int | None = None, seed: int = 0, **kwargs: Any
    ):
        super().__init__(root, **kwargs)
        self.source = Path(source) if source else default_source()
        self.limit, self.seed = limit, seed
        if limit:
            self.name = f"drugs_first{limit}"

    def _build_arrays(self) -> dict[str, Any]:
        return read_drugs(self.source, self.limit, self.seed, self.progress)

    def property_units(self) -> dict[str, str]:
        return {k: unit for k, (_, unit) in PROPERTIES.items()}
