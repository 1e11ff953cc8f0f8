"""Molecules with explicit hydrogens: QM9 and a drug-like set, EGNN denoiser, EDM metrics."""

from .domain import MoleculeDomain
from .drugs import DrugsDataModule
from .net import EGNN
from .qm9 import QM9DataModule
from .structures import Molecule

__all__ = ["EGNN", "DrugsDataModule", "Molecule", "MoleculeDomain", "QM9DataModule"]
