"""The platform-independent sample every reader returns.

A :class:`SpatialSample` bundles

* an **image** (:class:`SpatialImage`): pixels (possibly lazy), channel names, µm per pixel
  and the :class:`~diffst.geometry.AffineTransform` from the sample frame (µm) to its pixels;
* an **expression source**: either transcripts (:class:`TranscriptSource`, x/y in µm and a
  gene per molecule, streamed in chunks) or spots/bins (:class:`SpotTable`, counts with centres
  in µm and a diameter in µm);
* an optional **tissue mask** (:class:`TissueMask`) with its own transform;
* provenance: platform, source files.

Units are in the names: ``*_um`` is micrometres, ``*_px`` is image pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import scipy.sparse as sp

from diffst.geometry import AffineTransform, GeometryError

__all__ = [
    "InMemoryTranscripts",
    "InputError",
    "SpatialImage",
    "SpatialSample",
    "SpotTable",
    "TissueMask",
    "TranscriptChunk",
    "TranscriptSource",
]


class InputError(ValueError):
    """Bad input files or fields. The message names the file and the field."""


class ArrayLike(Protocol):
    """Anything numpy can slice: ndarray, np.memmap, a zarr array from tifffile."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    def __getitem__(self, key: Any, /) -> Any: ...


@dataclass
class SpatialImage:
    """An image with explicit geometry.

    Attributes
    ----------
    pixels
        ``[H, W, C]`` array-like (lazy for large TIFFs). Always channel-last.
    channels
        Channel names, e.g. ``("R", "G", "B")`` or ``("DAPI", "polyT")``.
    um_to_px
        Map from the sample frame (µm) to ``(col, row)`` of this image.
    path
        File the pixels come from (``None`` for in-memory images).
    kind
        ``"he"`` for brightfield H&E, ``"fluorescence"`` for DAPI/polyT/IF.
    """

    pixels: ArrayLike
    channels: tuple[str, ...]
    um_to_px: AffineTransform
    path: Path | None = None
    kind: Literal["he", "fluorescence"] = "he"

    def __post_init__(self) -> None:
        if len(self.pixels.shape) != 3:
            raise InputError(
                f"{self.path or 'image'}: pixels must be [H, W, C], got shape {self.pixels.shape}"
            )
        if self.pixels.shape[2] != len(self.channels):
            raise InputError(
                f"{self.path or 'image'}: {self.pixels.shape[2]} channels in pixels but "
                f"{len(self.channels)} channel names {self.channels}"
            )

    @property
    def shape_hw(self) -> tuple[int, int]:
        """Image height and width in pixels."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])

    @property
    def um_per_px(self) -> float:
        """Mean pixel size in µm (columns and rows)."""
        sx, sy = self.um_to_px.um_per_px()
        return 0.5 * (sx + sy)

    def extent_um(self) -> tuple[float, float, float, float]:
        """Bounding box ``(x_min, y_min, x_max, y_max)`` of the image in the sample frame (µm)."""
        h, w = self.shape_hw
        corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64)
        um = self.um_to_px.inverse().apply(corners)
        return (
            float(um[:, 0].min()),
            float(um[:, 1].min()),
            float(um[:, 0].max()),
            float(um[:, 1].max()),
        )


@dataclass(frozen=True)
class TranscriptChunk:
    """A batch of molecules: ``x_um``, ``y_um`` float64 ``[n]``; ``gene`` int32 ``[n]``
    (indices into :attr:`TranscriptSource.genes`)."""

    x_um: np.ndarray
    y_um: np.ndarray
    gene: np.ndarray

    def __len__(self) -> int:
        return int(self.gene.shape[0])


class TranscriptSource(Protocol):
    """Transcripts, streamed in chunks so that 10⁸ molecules never sit in memory at once."""

    genes: tuple[str, ...]
    """All gene / codeword names; ``gene`` indices of chunks refer to this tuple."""
    control: np.ndarray
    """Bool ``[len(genes)]``: True for control probes/codewords (blank, NegPrb, unassigned)."""
    path: Path | None

    def iter_chunks(self) -> Iterator[TranscriptChunk]:
        """Yield chunks of molecules that passed the reader's filters."""
        ...


@dataclass
class InMemoryTranscripts:
    """A :class:`TranscriptSource` backed by arrays (small files, tests, synthetic data)."""

    x_um: np.ndarray
    y_um: np.ndarray
    gene: np.ndarray
    genes: tuple[str, ...]
    control: np.ndarray
    path: Path | None = None
    chunk_size: int = 1_000_000

    def __post_init__(self) -> None:
        n = len(self.gene)
        if len(self.x_um) != n or len(self.y_um) != n:
            raise InputError(f"{self.path or 'transcripts'}: x_um, y_um and gene differ in length")
        if len(self.control) != len(self.genes):
            raise InputError(
                f"{self.path or 'transcripts'}: control mask length != number of genes"
            )
        for name, arr in (("x_um", self.x_um), ("y_um", self.y_um)):
            if n and not np.all(np.isfinite(arr)):
                raise InputError(f"{self.path or 'transcripts'}: field {name} contains NaN or Inf")

    def iter_chunks(self) -> Iterator[TranscriptChunk]:
        for start in range(0, len(self.gene), self.chunk_size):
            stop = start + self.chunk_size
            yield TranscriptChunk(
                self.x_um[start:stop], self.y_um[start:stop], self.gene[start:stop]
            )


@dataclass
class ChunkedTranscripts:
    """A :class:`TranscriptSource` that re-reads its file on every pass (streaming readers)."""

    genes: tuple[str, ...]
    control: np.ndarray
    open_chunks: Callable[[], Iterator[TranscriptChunk]]
    path: Path | None = None

    def iter_chunks(self) -> Iterator[TranscriptChunk]:
        yield from self.open_chunks()


@dataclass
class SpotTable:
    """Spots or bins with counts.

    Attributes
    ----------
    counts
        ``[n_spots, n_genes]`` CSR matrix. Raw integer counts unless ``is_raw_counts`` is False.
    genes
        Gene names (symbols where available, else ids), length ``n_genes``.
    centers_um
        ``[n_spots, 2]`` spot centres ``(x, y)`` in the sample frame, µm.
    diameter_um
        Spot diameter (circles) or bin side (squares), µm.
    shape
        ``"circle"`` (Visium, legacy ST) or ``"square"`` (Visium HD bins).
    ids
        Barcodes / spot names.
    array_coords
        ``[n_spots, 2]`` integer lattice coordinates ``(row, col)`` when the platform has them.
    lattice
        ``"hex"`` (Visium; doubled columns), ``"square"`` (legacy ST, Visium HD) or ``None``.
    pitch_um
        Centre-to-centre distance of lattice neighbours, µm.
    is_raw_counts
        False for normalised matrices (e.g. log1p); such tables cannot be used where counts
        are required.
    gene_ids
        Optional second identifier per gene (e.g. Ensembl ids).
    control
        Bool ``[n_genes]``: control probes.
    """

    counts: sp.csr_matrix
    genes: tuple[str, ...]
    centers_um: np.ndarray
    diameter_um: float
    shape: Literal["circle", "square"] = "circle"
    ids: tuple[str, ...] = ()
    array_coords: np.ndarray | None = None
    lattice: Literal["hex", "square"] | None = None
    pitch_um: float | None = None
    is_raw_counts: bool = True
    gene_ids: tuple[str, ...] = ()
    control: np.ndarray | None = None
    path: Path | None = None

    def __post_init__(self) -> None:
        where = self.path or "spots"
        self.counts = sp.csr_matrix(self.counts)
        n, g = self.counts.shape
        if len(self.genes) != g:
            raise InputError(f"{where}: {g} gene columns but {len(self.genes)} gene names")
        if self.centers_um.shape != (n, 2):
            raise InputError(f"{where}: centers_um must be [{n}, 2], got {self.centers_um.shape}")
        if not np.all(np.isfinite(self.centers_um)):
            raise InputError(f"{where}: spot centres contain NaN or Inf")
        if not (np.isfinite(self.diameter_um) and self.diameter_um > 0):
            raise InputError(f"{where}: spot diameter must be positive µm, got {self.diameter_um}")
        data = self.counts.data
        if not np.all(np.isfinite(data)):
            raise InputError(f"{where}: counts contain NaN or Inf")
        if np.any(data < 0):
            raise InputError(f"{where}: counts contain negative values")
        if self.control is None:
            self.control = np.zeros(g, dtype=bool)

    @property
    def n_spots(self) -> int:
        return int(self.counts.shape[0])

    def as_molecules(self, block: int = 50_000) -> ChunkedTranscripts:
        """The counts as molecules at their spot (bin) centres, streamed by blocks of spots.

        For bin arrays no coarser than the HR bins (Visium HD ``square_002um``): binning these
        molecules is summing each bin into the HR bin that holds its centre, so every route
        that bins transcripts (prepare's HR map, pseudo-spots, tissue density) serves them.
        """
        self.require_raw_counts()
        counts, centres = self.counts, self.centers_um

        def chunks() -> Iterator[TranscriptChunk]:
            for start in range(0, counts.shape[0], block):
                coo = counts[start : start + block].tocoo()
                n = np.rint(coo.data).astype(np.int64)
                rows = np.repeat(coo.row, n) + start
                yield TranscriptChunk(
                    centres[rows, 0], centres[rows, 1], np.repeat(coo.col, n).astype(np.int32)
                )

        assert self.control is not None
        return ChunkedTranscripts(self.genes, self.control, chunks, self.path)

    def require_raw_counts(self) -> None:
        """Raise unless the matrix holds non-negative integer counts."""
        where = self.path or "spots"
        if not self.is_raw_counts:
            raise InputError(
                f"{where}: the expression matrix is not raw counts (flagged normalised); "
                "diffst needs raw integer UMI counts here"
            )
        data = self.counts.data
        bad = data[~np.isclose(data, np.round(data))]
        if bad.size:
            raise InputError(
                f"{where}: counts are not integers (e.g. {bad[:3]}); "
                "log-normalised data cannot be used where raw counts are required"
            )


@dataclass
class TissueMask:
    """Boolean tissue mask ``[H, W]`` with the transform from µm to its pixels."""

    mask: np.ndarray
    um_to_px: AffineTransform

    def __post_init__(self) -> None:
        if self.mask.ndim != 2:
            raise GeometryError(f"tissue mask must be 2-D, got shape {self.mask.shape}")
        self.mask = self.mask.astype(bool, copy=False)


@dataclass
class SpatialSample:
    """One section: image + expression + geometry. What every ``read_<platform>`` returns."""

    name: str
    platform: str
    image: SpatialImage | None = None
    transcripts: TranscriptSource | None = None
    spots: SpotTable | None = None
    tissue_mask: TissueMask | None = None
    source_files: dict[str, Path] = field(default_factory=dict)
    metadata: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.transcripts is None and self.spots is None:
            raise InputError(f"sample {self.name!r}: neither transcripts nor spots were read")

    @property
    def genes(self) -> tuple[str, ...]:
        """Gene names of the expression source."""
        if self.transcripts is not None:
            return self.transcripts.genes
        assert self.spots is not None
        return self.spots.genes

    @property
    def control(self) -> np.ndarray:
        """Control-probe flags for :attr:`genes`."""
        if self.transcripts is not None:
            return np.asarray(self.transcripts.control, dtype=bool)
        assert self.spots is not None and self.spots.control is not None
        return self.spots.control
