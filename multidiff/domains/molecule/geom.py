"""GEOM-Drugs (Axelrod & Gomez-Bombarelli 2022) as the recent generators share it.

The processed release of MiDi (Vignac et al. 2023), also read by EQGAT-diff, SemlaFlow and the corrected
protocol of Nikitin et al. 2025: three pickles, ``train_data.pickle``, ``val_data.pickle`` and
``test_data.pickle`` (an 80/10/10 split of the molecules, seed 0), each a list of ``(smiles, conformers)`` with
``conformers`` a list of RDKit molecules with explicit hydrogens and one conformer each (CREST/GFN2-xTB
geometries), the lowest in energy first. They total several GB and are downloaded from
https://bits.csb.pitt.edu/files/geom_raw/ into ``root`` (``data.download=true`` fetches them; nothing is
downloaded otherwise).

Each kept conformer is one training item (MiDi and EQGAT-diff keep 5 per molecule, SemlaFlow 1:
``conformers``). ``clean=true`` applies Nikitin et al.'s filter: every conformer sanitised and kekulised, one
fragment, every bond within 40 % of the sum of covalent radii; a molecule with any failing conformer is
dropped. The element vocabulary is MiDi's.
"""

from __future__ import annotations

import logging
import pickle
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from rdkit import Chem
from tqdm import tqdm

from .data import SPLITS, MoleculeDataModule
from .packing import Packer

log = logging.getLogger(__name__)

URL = "https://bits.csb.pitt.edu/files/geom_raw/"
FILES = {split: f"{split}_data.pickle" for split in SPLITS}
#: MiDi's atom encoder for GEOM-Drugs
GEOM_ELEMENTS = ("H", "B", "C", "N", "O", "F", "Al", "Si", "P", "S", "Cl", "As", "Br", "I", "Hg", "Bi")
#: covalent radii (Angstrom) of the cleaning filter (Nikitin et al., scripts/geom_drugs_processing.py)
COVALENT_RADII = {
    "H": 0.31, "C": 0.76, "N": 0.71, "O": 0.66, "F": 0.57, "P": 1.07, "S": 1.05, "Cl": 1.02, "Br": 1.20, "I": 1.39,
}  # fmt: skip
OTHER_RADIUS = 1.5


def clean_conformer(mol: Chem.Mol) -> Chem.Mol | None:
    """The conformer sanitised and kekulised, or None when that fails, it has several fragments or a bond
    length is off by more than 40 % of the sum of covalent radii."""
    mol = Chem.Mol(mol)
    try:
        Chem.SanitizeMol(mol)
        Chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception:  # sanitisation and kekulisation errors: the conformer is dropped
        return None
    if len(Chem.GetMolFrags(mol)) != 1:
        return None
    pos = mol.GetConformer().GetPositions()
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        ideal = sum(COVALENT_RADII.get(mol.GetAtomWithIdx(k).GetSymbol(), OTHER_RADIUS) for k in (i, j))
        if abs(np.linalg.norm(pos[i] - pos[j]) - ideal) > 0.4 * ideal:
            return None
    return mol


def read_geom_split(path: Path, conformers: int, clean: bool, progress: bool) -> tuple[list[Chem.Mol], int, int]:
    """The kept conformers of one pickle, the number of molecules in it and the number dropped by cleaning."""
    with open(path, "rb") as f:
        entries = pickle.load(f)  # the release's own format: a trusted local file the user downloaded
    kept, dropped = [], 0
    for smiles, mols in tqdm(entries, desc=f"GEOM-Drugs: {path.name}", unit=" molecules", disable=not progress):
        mols = list(mols)[:conformers]
        if clean:
            cleaned = [clean_conformer(m) for m in mols]
            if Chem.MolFromSmiles(smiles) is None or not cleaned or any(m is None for m in cleaned):
                dropped += 1
                continue
            mols = cleaned
        kept += mols
    return kept, len(entries), dropped


def download(root: Path) -> None:
    """Fetch the three pickles into ``root`` (several GB), each written under a temporary name first."""
    root.mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        target = root / name
        if target.exists():
            continue
        log.info("downloading %s%s -> %s", URL, name, target)
        tmp = target.with_suffix(".part")
        with urllib.request.urlopen(URL + name) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            with tqdm(total=total, unit="B", unit_scale=True, desc=name) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        shutil.move(tmp, target)


class GeomDrugsDataModule(MoleculeDataModule):
    """GEOM-Drugs from MiDi's pickles in ``root`` (see the module's docstring). ``conformers``: per molecule (the
    lowest in energy first); ``clean``: Nikitin et al.'s filter; ``download``: fetch missing pickles;
    ``loader``: the options of :class:`~.data.MoleculeDataModule`."""

    name = "geom_drugs"

    def __init__(
        self,
        root: str | Path,
        conformers: int = 5,
        clean: bool = True,
        download: bool = False,
        **loader: Any,
    ):
        super().__init__(root, **loader)
        if conformers < 1:
            raise ValueError(f"data.conformers={conformers}: keep at least one conformer per molecule")
        self.conformers, self.clean, self.download = conformers, clean, download
        self.name = f"geom_drugs_c{conformers}{'_clean' if clean else ''}"

    def raw_files(self) -> dict[str, Path]:
        return {split: self.root / name for split, name in FILES.items()}

    def _build_arrays(self) -> dict[str, Any]:
        files = self.raw_files()
        if self.download:
            download(self.root)
        missing = [str(p) for p in files.values() if not p.exists()]
        if missing:
            raise FileNotFoundError(
                f"GEOM-Drugs: {', '.join(missing)} not found. Download MiDi's processed release ({URL}: "
                f"{', '.join(FILES.values())}, several GB) into data.root={self.root}, or set data.download=true"
            )
        packer = Packer(elements=self.elements or list(GEOM_ELEMENTS))
        splits: dict[str, np.ndarray] = {}
        for split, path in files.items():
            mols, total, dropped = read_geom_split(path, self.conformers, self.clean, self.progress)
            start = len(packer)
            for mol in mols:
                outside = {a.GetSymbol() for a in mol.GetAtoms()} - set(packer.elements)
                if outside:
                    raise ValueError(f"{path}: {Chem.MolToSmiles(mol)} has {sorted(outside)}, not in data.elements")
                packer.add_mol(mol)
            splits[split] = np.arange(start, len(packer))
            log.info(
                "GEOM-Drugs %s: %d conformers of %d molecules (%d dropped by cleaning)",
                split,
                len(mols),
                total,
                dropped,
            )
        return packer.pack(splits)
