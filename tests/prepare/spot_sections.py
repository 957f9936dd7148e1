"""Synthetic multi-section legacy-ST data (labelled synthetic), in the legacy file format.

Each section is :func:`diffst.synthetic.simulate_tissue` (cell types with their own image
texture and expression programme) of 3600 × 3200 µm written by
:func:`diffst.synthetic.write_legacy_st`: a 18 × 16 square lattice of 100 µm spots at 200 µm
pitch, ``<name>_counts.tsv.gz`` (rows ``"<x>x<y>"``), ``<name>_spots.tsv``
(``x y new_x new_y pixel_x pixel_y selected``, spots without molecules unselected and absent
from the counts) and ``<name>_he.jpg`` at 10 µm/px. Sections differ by seed only, so they are
sections of the same synthetic tissue.
"""

from __future__ import annotations

from pathlib import Path

from diffst.synthetic import simulate_tissue, write_legacy_st

SECTION_UM = (3600.0, 3200.0)  # width, height: 18 × 16 spots of 200 µm


def write_sections(folder: Path, n: int = 3) -> list[dict[str, Path]]:
    """Write sections ``section0 … section{n-1}``; return their counts/spots/image paths."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        tissue = simulate_tissue(
            width_um=SECTION_UM[0],
            height_um=SECTION_UM[1],
            n_genes=8,
            n_cell_types=3,
            cell_diameter_um=60.0,
            counts_per_cell=15.0,
            um_per_px=10.0,
            seed=100 + k,
        )
        counts, spots, image = write_legacy_st(tissue, folder, name=f"section{k}", seed=k)
        out.append({"counts": counts, "spots": spots, "image": image})
    return out
