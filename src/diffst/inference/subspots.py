"""Spot-array checkpoints below the spot pitch: measured spots as LR, a lattice ``k×`` finer as HR.

A checkpoint trained with ``diffst prepare --hr spots`` learned one relation: given ``k×k`` spots
summed into one LR value (and the image of those spots), how the sum splits over the ``k×k``
spots. Nothing finer than the spots was measured, so prediction below the pitch applies that
relation **one scale below the training data**: every measured spot becomes one LR cell and is
split into ``k×k`` sub-spots. This is an assumption of scale invariance (the way ``k×k`` spots
share a block's counts is the way ``k×k`` sub-spots share a spot's counts), not a measured fact;
it is stated in ``uns['diffst']['below_pitch']`` of every such prediction.

Geometry. The section's spots are put on their regular grid
(:func:`~diffst.sections.spot_grid.spot_grid`, the same function ``prepare`` uses) and the
network runs in the grid frame of :func:`~diffst.sections.spot_grid.grid_frame`, where every
spot is a ``pitch × pitch`` square; the sub-spot grid has side ``pitch / k`` in that frame, so the
image views of a tile cover ``k×`` less slide than in training, exactly as the relation is scaled
down. Positions written to the AnnData are the refinement of the real lattice: sub-spot
``(i, j)`` of a spot sits at the spot's fitted centre plus ``((j + ½)/k − ½, (i + ½)/k − ½)`` of its
lattice cell (``pitch × pitch`` on a square lattice, ``pitch × pitch·√3/2`` on Visium's hex
lattice, whose alternate rows are offset by half a pitch: the sub-spots tile the slide without
gaps or overlaps).

Counts. The network saw LR values of ``k²`` spots and HR values of single spots; here an LR value
is one spot, ``k²`` times smaller. The LR counts are multiplied by ``k²`` before the network and
its outputs divided by ``k²`` (:attr:`SubspotFrame.count_scale`), so the network works in the
count range it was trained on and the output is in counts per sub-spot. Each spot's ``k×k``
sub-spots re-aggregate to the measured spot (consistency in ``uns['diffst']['spot_consistency']``
before projection; exact after it, the default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from diffst.config import ConfigError
from diffst.io.sample import InputError, SpatialImage, SpatialSample

if TYPE_CHECKING:
    from diffst.sections.inputs import SectionInputs

__all__ = [
    "BELOW_PITCH_STATEMENT",
    "SubspotFrame",
    "check_subspot_options",
    "is_spot_array",
    "subspot_inputs",
]

BELOW_PITCH_STATEMENT = (
    "This checkpoint was trained on measured spot arrays (HR = spots, LR = k×k pooled spots). "
    "The prediction applies the learned k× relation one scale below the training data: each "
    "measured spot is split into k×k sub-spots. Nothing finer than the spots was measured, so "
    "the relation at this scale is assumed (scale invariance), not validated."
)


def is_spot_array(meta: dict[str, Any]) -> bool:
    """Whether a checkpoint's store manifest is a spot-array store (``prepare --hr spots``)."""
    return str(meta.get("geometry", {}).get("lr_mode", "")) == "spots"


@dataclass(frozen=True)
class SubspotFrame:
    """Where the sub-spot grid of a spot-array prediction sits on the section."""

    factor: int
    """``k``: sub-spots per spot side."""
    pitch_um: float
    """Spot centre-to-centre distance, µm."""
    lattice: str
    """``"hex"`` (Visium) or ``"square"`` (legacy ST)."""
    grid_to_um: np.ndarray
    """``[3, 3]`` homogeneous map from the grid frame (spots as ``pitch`` squares) to µm."""
    spot_centres_um: np.ndarray
    """``[H, W, 2]`` fitted centre ``(x, y)`` µm of every spot-grid cell."""
    spot_index: np.ndarray
    """``[H, W]`` int64, row of the spot table at each spot-grid cell (−1: no spot)."""
    spot_ids: tuple[str, ...]
    """Barcodes of the spot table (empty when the table has none)."""
    image: SpatialImage | None
    """The section image in the sample's µm frame (for the AnnData), or ``None``."""

    @property
    def count_scale(self) -> float:
        """``k²``: LR counts are multiplied by it before the network, outputs divided by it."""
        return float(self.factor**2)

    @property
    def subspot_um(self) -> float:
        """Sub-spot side along the lattice rows, µm (``pitch / k``)."""
        return self.pitch_um / self.factor

    def centres_um(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``[n, 2]`` centres ``(x, y)`` µm of sub-spot grid cells ``(rows[i], cols[i])``."""
        k = self.factor
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        parent = self.spot_centres_um[rows // k, cols // k]
        offset = np.stack([((cols % k) + 0.5) / k - 0.5, ((rows % k) + 0.5) / k - 0.5], axis=1)
        linear = self.grid_to_um[:2, :2] * self.pitch_um  # one pitch of the grid frame → µm
        return parent + offset @ linear.T

    def parent_spots(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Spot-table row of the spot holding each sub-spot (−1 for none)."""
        k = self.factor
        return self.spot_index[np.asarray(rows) // k, np.asarray(cols) // k]

    def to_dict(self) -> dict[str, Any]:
        """What ``uns['diffst']['below_pitch']`` records."""
        return {
            "factor": self.factor,
            "spot_pitch_um": self.pitch_um,
            "subspot_um": self.subspot_um,
            "lattice": self.lattice,
            "count_scale": self.count_scale,
            "grid_frame_to_um": self.grid_to_um.tolist(),
            "statement": BELOW_PITCH_STATEMENT.replace(
                "k×k", f"{self.factor}×{self.factor}"
            ).replace("k×", f"{self.factor}×"),
        }


def subspot_inputs(
    sample: SpatialSample, genes: tuple[str, ...], meta: dict[str, Any]
) -> tuple[SectionInputs, SubspotFrame, SpatialImage | None]:
    """The section as a spot-array checkpoint sees it below the pitch.

    Parameters
    ----------
    sample
        A spot-based section with lattice coordinates (Visium, legacy ST).
    genes
        The checkpoint's genes, as named in the section's spot table.
    meta
        The checkpoint's store manifest (``geometry.factor``, ``hr_size``, ``spots``).

    Returns
    -------
    ``(inputs, frame, image)``: the sub-spot section in the grid frame (``lr_layout="spots"``:
    every measured spot is a ``pitch`` square, one LR cell), its placement on the slide and the
    image addressed in the grid frame (``None`` without an image).
    """
    from diffst.sections.binning import GridGeometry
    from diffst.sections.config import SpotHRConfig
    from diffst.sections.inputs import SectionInputs
    from diffst.sections.spot_grid import grid_frame, grid_image, spot_grid
    from diffst.sections.spot_lattice import grid_cells, grid_centres

    table = sample.spots
    where = sample.source_files.get("spots", sample.name)
    if table is None:
        raise InputError(
            f"{where}: a checkpoint trained on spot arrays (prepare --hr spots) predicts "
            "spot-based sections (Visium, legacy ST), but this section has no spot table"
        )
    if table.array_coords is None or table.lattice is None:
        raise InputError(
            f"{where}: field array_coords/lattice is missing; the sub-spot lattice is built from "
            "the spots' array coordinates"
        )
    spots_meta = meta.get("spots", {})
    k = int(spots_meta.get("factor", meta["geometry"]["factor"]))
    patch = int(meta["hr_size"])
    cfg = SpotHRConfig(
        factor=k,
        patch=patch,
        stride=patch,
        min_spot_counts=int(spots_meta.get("min_spot_counts", 1)),
        min_measured_fraction=0.0,
    )
    grid = spot_grid(sample, genes, cfg)
    if not grid.measured.any():
        raise InputError(
            f"{where}: no spot is measured (in tissue with counts); nothing to predict"
        )
    h, w = grid.measured.shape
    _, to_um = grid_frame(grid, k, (h, w))
    pitch = grid.pitch_um
    geometry = GridGeometry((0.0, 0.0), pitch / k, k, (h * k, w * k))
    tissue = np.kron(grid.measured, np.ones((k, k), dtype=bool))
    r, c = np.nonzero(grid.measured)
    inputs = SectionInputs(
        genes, geometry, tissue, "spots",
        spot_centres_um=np.column_stack([(c + 0.5) * pitch, (r + 0.5) * pitch]),
        spot_counts=grid.hr[:, r, c].T.astype(np.float64),
        spot_diameter_um=pitch, spot_shape="square",
        spot_pitch_um=0.5 * pitch,  # LR reach: only the cell whose centre is the spot's
    )  # fmt: skip
    rr, cc = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    cells = np.column_stack([rr.ravel(), cc.ravel()])
    affine = grid.lattice_to_um
    centres = grid_centres(cells, grid.frame) @ affine[:, :2].T + affine[:, 2]
    index = np.full((h, w), -1, dtype=np.int64)
    at = grid_cells(table.array_coords, grid.frame)
    index[at[:, 0], at[:, 1]] = np.arange(len(at))
    frame = SubspotFrame(
        factor=k,
        pitch_um=pitch,
        lattice=grid.frame.lattice,
        grid_to_um=to_um,
        spot_centres_um=centres.reshape(h, w, 2),
        spot_index=index,
        spot_ids=tuple(table.ids),
        image=grid.image,
    )
    image = grid_image(grid, to_um) if grid.image is not None else None
    return inputs, frame, image


def check_subspot_options(region_um: Any, cells: Any = None) -> None:
    """Options a sub-spot prediction does not take (raised before any compute)."""
    if region_um is not None:
        raise ConfigError(
            "predict.region_um: a checkpoint trained on spot arrays predicts whole sections "
            "(its sub-spot grid is built from the spot lattice); leave --region out"
        )
    if cells is not None:
        raise ConfigError(
            "predict --cells: per-cell output needs a prediction on a µm grid (a checkpoint "
            "trained on transcripts); sub-spots of a spot-array checkpoint are not cells"
        )
