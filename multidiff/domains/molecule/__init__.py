"""Molecules with explicit hydrogens: QM9, GEOM-Drugs, a drug-like set and your own files; EGNN denoiser, metrics."""

from .domain import MoleculeDomain
from .drugs import DrugsDataModule
from .files import MoleculeFilesDataModule
from .geom import GeomDrugsDataModule
from .net import EGNN
from .qm9 import QM9DataModule
from .structures import Molecule

__all__ = [
    "EGNN",
    "DrugsDataModule",
    "GeomDrugsDataModule",
    "MoleculeFilesDataModule",
    "Molecule",
    "MoleculeDomain",
    "QM9DataModule",
]
