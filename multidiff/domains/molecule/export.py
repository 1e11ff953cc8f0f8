"""Write molecules: multi-record SDF (the molecule's own bonds, else bonds inferred from distances), multi-frame
XYZ, PNG grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rdkit import Chem
from rdkit.Chem import AllChem, Draw

from .bonds import BondTable
from .structures import Molecule, sanitized_smiles, to_rdkit


def _field(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return str(value)


def annotate(molecules: Sequence[Molecule]) -> list[tuple[np.ndarray, str | None]]:
    """Bond orders and validity (heavy-atom SMILES, or None when invalid) per molecule: a molecule's own bonds
    with its charges (a graph model's), else bonds from distances without charges (EDM validity)."""
    vocabulary = sorted({e for m in molecules for e in m.elements})
    index = {e: k for k, e in enumerate(vocabulary)}
    perceive = [k for k, m in enumerate(molecules) if m.bonds is None]
    types = [np.array([index[e] for e in molecules[k].elements], np.int64) for k in perceive]
    perceived = BondTable(vocabulary).batch_orders([molecules[k].positions for k in perceive], types)
    orders = [m.bonds for m in molecules]
    for k, o in zip(perceive, perceived):
        orders[k] = o
    out = []
    for m, o in zip(molecules, orders):
        rd = to_rdkit(m, o, with_charges=m.bonds is not None, with_conformer=False)
        # readable heavy-atom SMILES for files; metrics use EDM's explicit-H form
        out.append((o, None if sanitized_smiles(rd) is None else Chem.MolToSmiles(without_hydrogens(rd))))
    return out


def without_hydrogens(rd: Chem.Mol) -> Chem.Mol:
    """``rd`` with its hydrogens folded into their atoms, sanitised where RDKit can. Removing hydrogens re-sanitises,
    and a generated graph can fail there (one molecule of a 128-molecule graph-model batch raised a valence error
    in ``samples.png``); it is drawn and written as it is rather than failing the whole export."""
    try:
        return Chem.RemoveHs(rd, sanitize=True)
    except (ValueError, RuntimeError):  # MolSanitizeException (valence, kekulisation) is a ValueError
        return Chem.RemoveHs(rd, sanitize=False)


def write_sdf(molecules: Sequence[Molecule], path: Path, meta: dict[str, Any] | None = None, start: int = 0) -> Path:
    """One record per molecule, atoms in order, an unnamed one named ``sample_{start + k}``. A molecule with its
    own bonds (a graph model's) carries them and its formal charges, valid or not (``valid`` says whether RDKit
    sanitises it). Otherwise valid molecules (EDM validity) carry their inferred bonds and formal charges; invalid
    ones keep atoms and coordinates only and ``valid = 0``. Fields: ``valid``, ``smiles`` (when valid),
    ``num_atoms``, the molecule's properties (e.g. the sampled condition) and scalar entries of ``meta``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with Chem.SDWriter(str(path)) as writer:
        writer.SetKekulize(False)
        for k, (mol, (orders, smiles)) in enumerate(zip(molecules, annotate(molecules))):
            own = mol.bonds is not None
            rd = to_rdkit(mol, orders if smiles is not None or own else None, with_charges=True)
            rd.UpdatePropertyCache(strict=False)  # unsanitised molecules still need valences to write
            rd.SetProp("_Name", mol.name or f"sample_{start + k}")
            rd.SetIntProp("valid", int(smiles is not None))
            if smiles is not None:
                rd.SetProp("smiles", smiles)
            rd.SetIntProp("num_atoms", len(mol))
            for key, value in {**(meta or {}), **mol.properties}.items():
                if isinstance(value, str | int | float | np.integer | np.floating | bool):
                    rd.SetProp(str(key), _field(value))
            writer.write(rd)
    return path


def write_xyz(molecules: Sequence[Molecule], path: Path, start: int = 0) -> Path:
    """Concatenated XYZ frames; the comment line holds the name and ``key=value`` properties."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, mol in enumerate(molecules):
        props = " ".join(f"{key}={_field(v)}" for key, v in mol.properties.items())
        lines += [str(len(mol)), f"{mol.name or f'sample_{start + k}'} {props}".strip()]
        lines += [f"{e:<2s} {x:14.8f} {y:14.8f} {z:14.8f}" for e, (x, y, z) in zip(mol.elements, mol.positions)]
    path.write_text("\n".join(lines) + "\n")
    return path


def draw_grid(molecules: Sequence[Molecule], path: Path, max_molecules: int = 48, per_row: int = 6) -> Path:
    """2D depictions (hydrogens hidden) of the valid molecules, legends = SMILES of the largest fragment; the
    atoms a molecule was given (its ``given_atoms`` property, when grown from a fragment) are highlighted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    drawn, legends, highlights = [], [], []
    for mol, (orders, smiles) in zip(molecules, annotate(molecules)):
        if smiles is None:
            continue
        rd = to_rdkit(mol, orders, with_charges=mol.bonds is not None, with_conformer=False)
        for number in str(mol.properties.get("given_atoms", "")).split():
            rd.GetAtomWithIdx(int(float(number)) - 1).SetBoolProp("given", True)
        rd = without_hydrogens(rd)  # atom properties survive; indices shift
        AllChem.Compute2DCoords(rd)
        drawn.append(rd)
        legends.append(smiles if len(smiles) <= 40 else smiles[:37] + "...")
        highlights.append([a.GetIdx() for a in rd.GetAtoms() if a.HasProp("given")])
        if len(drawn) == max_molecules:
            break
    if drawn:
        img = Draw.MolsToGridImage(
            drawn,
            molsPerRow=min(per_row, len(drawn)),
            subImgSize=(220, 220),
            legends=legends,
            highlightAtomLists=highlights if any(highlights) else None,
        )
        img.save(str(path))
    else:
        from PIL import Image, ImageDraw

        img = Image.new("RGB", (440, 120), "white")
        ImageDraw.Draw(img).text((20, 50), f"no valid molecule among {len(molecules)}", fill="black")
        img.save(str(path))
    return path
