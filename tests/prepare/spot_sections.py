"""Synthetic multi-section legacy-ST data (labelled synthetic), written in the legacy file format.

Each section is a ``rows × cols`` square spot lattice (array x = 1..cols, y = 1..rows, 200 µm
pitch) over an elliptical tissue. Two latent tissue programmes vary smoothly in space; they set
both the spot expression (Poisson counts, integer UMIs) and the H&E-like image colour, so that
histology predicts expression the same way on every section. Files per section:

* ``<name>_counts.tsv.gz``: gzip TSV, rows ``"<x>x<y>"``, one column per gene;
* ``<name>_spots.tsv``: columns ``x y new_x new_y pixel_x pixel_y selected`` (``pixel_x`` is the
  image column, ``pixel_y`` the row); spots outside the tissue are in the table (selected 0)
  but not in the counts, and a few selected spots are also left out of the counts;
* ``<name>_HE.jpg``: the image (10 px per 200 µm pitch → 20 µm/px).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

GENES = ("SYN-EPCAM", "SYN-KRT8", "SYN-PTPRC", "SYN-CD3E", "SYN-COL1A1", "SYN-ACTA2")
PITCH_PX = 10.0
OFFSET_PX = (7.0, 5.0)


def _latent(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Two smooth programmes ``[2, H, W]`` in [0, 1] from random Gaussian bumps."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros((2, h, w))
    for k in range(2):
        for _ in range(3):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            s = rng.uniform(0.15, 0.3) * max(h, w)
            out[k] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s**2))
        out[k] /= out[k].max()
    return out


def write_section(
    folder: Path, name: str, seed: int, shape: tuple[int, int] = (16, 18)
) -> dict[str, Path]:
    """Write one synthetic legacy-ST section; return its ``counts``/``spots``/``image`` paths."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    latent = _latent(shape, rng)
    yy, xx = np.mgrid[0:rows, 0:cols]
    tissue = ((yy - (rows - 1) / 2) / (rows / 2)) ** 2 + (
        (xx - (cols - 1) / 2) / (cols / 2)
    ) ** 2 < 1.0
    x, y = xx.ravel() + 1, yy.ravel() + 1
    new_x = x + rng.normal(0, 0.02, x.size)
    new_y = y + rng.normal(0, 0.02, y.size)
    pixel_x = OFFSET_PX[0] + new_x * PITCH_PX
    pixel_y = OFFSET_PX[1] + new_y * PITCH_PX
    selected = tissue.ravel().astype(int)
    # programme 0 drives the first three genes, programme 1 the last three, plus background
    loadings = np.array([[8, 5, 1, 1, 0.5, 0.5], [0.5, 0.5, 1, 2, 8, 6]], dtype=np.float64)
    rate = 0.5 + np.einsum("kg,kn->ng", loadings, latent.reshape(2, -1))
    counts = rng.poisson(rate)
    in_counts = selected.astype(bool) & (rng.random(x.size) > 0.03)
    ids = [f"{a}x{b}" for a, b in zip(x, y, strict=True)]
    files = {
        "counts": folder / f"{name}_counts.tsv.gz",
        "spots": folder / f"{name}_spots.tsv",
        "image": folder / f"{name}_HE.jpg",
    }
    with gzip.open(files["counts"], "wt") as fh:
        fh.write("\t" + "\t".join(GENES) + "\n")
        for k in np.flatnonzero(in_counts):
            fh.write(ids[k] + "\t" + "\t".join(str(int(v)) for v in counts[k]) + "\n")
    with open(files["spots"], "w") as fh:
        fh.write("x\ty\tnew_x\tnew_y\tpixel_x\tpixel_y\tselected\n")
        for k in range(x.size):
            fh.write(
                f"{x[k]}\t{y[k]}\t{new_x[k]:.3f}\t{new_y[k]:.3f}\t{pixel_x[k]:.2f}\t"
                f"{pixel_y[k]:.2f}\t{selected[k]}\n"
            )
    _write_image(files["image"], latent, tissue, rng)
    return files


def _write_image(
    path: Path, latent: np.ndarray, tissue: np.ndarray, rng: np.random.Generator
) -> None:
    """H&E-like RGB: programme 0 purple (nuclei-rich), programme 1 pink (stroma), white outside."""
    rows, cols = tissue.shape
    h = int(OFFSET_PX[1] + (rows + 2) * PITCH_PX)
    w = int(OFFSET_PX[0] + (cols + 2) * PITCH_PX)
    # lattice value at each pixel (nearest spot), then a little texture
    ys = np.clip(np.rint((np.arange(h) + 0.5 - OFFSET_PX[1]) / PITCH_PX) - 1, 0, rows - 1).astype(
        int
    )
    xs = np.clip(np.rint((np.arange(w) + 0.5 - OFFSET_PX[0]) / PITCH_PX) - 1, 0, cols - 1).astype(
        int
    )
    a, b = latent[0][np.ix_(ys, xs)], latent[1][np.ix_(ys, xs)]
    inside = tissue[np.ix_(ys, xs)]
    rgb = np.stack([235 - 90 * a - 10 * b, 230 - 150 * a - 90 * b, 240 - 60 * a - 40 * b], axis=-1)
    rgb += rng.normal(0, 6, rgb.shape)
    rgb[~inside] = 245
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=92)


def write_sections(
    folder: Path, n: int = 3, shape: tuple[int, int] = (16, 18)
) -> list[dict[str, Path]]:
    """``n`` sections ``section0 … section{n-1}`` of the same synthetic tissue (seeds 0..n-1)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [write_section(folder, f"section{k}", seed=100 + k, shape=shape) for k in range(n)]
