"""Element vocabularies and the valence rules of the EDM stability metric."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

# QM9 and the drug-like set use these; the order fixes the one-hot columns.
QM9_ELEMENTS: tuple[str, ...] = ("H", "C", "N", "O", "F")
DRUG_ELEMENTS: tuple[str, ...] = ("H", "C", "N", "O", "F", "P", "S", "Cl", "Br", "I")

ATOMIC_NUMBERS: dict[str, int] = {
    "H": 1,
    "B": 5,
    "C": 6,
    "N": 7,
    "O": 8,
    "F": 9,
    "Al": 13,
    "Si": 14,
    "P": 15,
    "S": 16,
    "Cl": 17,
    "As": 33,
    "Br": 35,
    "I": 53,
    "Hg": 80,
    "Bi": 83,
}

# Jmol's element colours (the CPK convention molecule viewers share), for atoms drawn as coloured points
JMOL_COLORS: dict[str, str] = {
    "H": "FFFFFF",
    "B": "FFB5B5",
    "C": "909090",
    "N": "3050F8",
    "O": "FF0D0D",
    "F": "90E050",
    "Al": "BFA6A6",
    "Si": "F0C8A0",
    "P": "FF8000",
    "S": "FFFF30",
    "Cl": "1FF01F",
    "As": "BD80E3",
    "Br": "A62929",
    "I": "940094",
    "Hg": "B8B8D0",
    "Bi": "9E4FB5",
}


def element_colors(elements: Sequence[str]) -> np.ndarray:
    """``(n, 3)`` uint8 RGB per atom, Jmol's colours (magenta for an element without one)."""
    hexes = [JMOL_COLORS.get(e, "FF1493") for e in elements]
    return np.array([[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in hexes], dtype=np.uint8).reshape(-1, 3)


# Allowed bond-order sums per element (EDM, qm9/bond_analyze.py `allowed_bonds`); charges are ignored
# there, which is why QM9's zwitterions count as unstable and data stability is ~95 %, not 100 %.
ALLOWED_VALENCES: dict[str, tuple[int, ...]] = {
    "H": (1,),
    "C": (4,),
    "N": (3,),
    "O": (2,),
    "F": (1,),
    "B": (3,),
    "Al": (3,),
    "Si": (4,),
    "P": (3, 5),
    "S": (4,),
    "Cl": (1,),
    "As": (3,),
    "Br": (1,),
    "I": (1,),
    "Hg": (1, 2),
    "Bi": (3, 5),
}

# Elements that gain a bond per positive charge (N+ has 4, O- has 1); the others (C, B, ...) lose one
# per unit of charge of either sign. Used only by the charge-aware stability variant.
ELECTRON_RICH = {"N", "O", "F", "P", "S", "Cl", "As", "Br", "I"}


def check_elements(symbols: Iterable[str], vocabulary: Sequence[str], where: str) -> None:
    """Raise a clear error when a symbol lies outside ``vocabulary``."""
    unknown = sorted(set(symbols) - set(vocabulary))
    if unknown:
        raise ValueError(f"{where}: element(s) {unknown} are not in the vocabulary {list(vocabulary)}")


def reindex_types(types: np.ndarray, own: Sequence[str], vocabulary: Sequence[str], where: str) -> np.ndarray:
    """Atom types, indices into ``own``, as indices into ``vocabulary``; a ValueError naming ``where`` and the
    elements present that ``vocabulary`` lacks."""
    own, vocabulary = [str(e) for e in own], [str(e) for e in vocabulary]
    missing = sorted({own[t] for t in np.unique(types)} - set(vocabulary))
    if missing:
        raise ValueError(f"{where}: the vocabulary {vocabulary} lacks {missing}, present in the data")
    lookup = np.array([vocabulary.index(e) if e in vocabulary else -1 for e in own], np.int64)
    return lookup[np.asarray(types, np.int64)]
