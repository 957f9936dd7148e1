"""Configuration of ``diffst prepare`` (paired HR/LR patch builder).

Defaults follow the Diff-ST paper (Wang et al., MICCAI 2024): a 5120-px H&E patch at
0.2125 µm/px is a 256×256 grid of 4.25 µm HR bins, pooled 10× to the 26×26 LR layout; the
tissue-level view is 256 px and the cell level is a 16×16 grid of tiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from diffst.config import ConfigError

__all__ = [
    "LRMode",
    "NormKind",
    "PrepareConfig",
    "SplitConfig",
    "SpotHRConfig",
    "TissueConfig",
    "ViewConfig",
]

LRMode = Literal["grid", "visium"]
HRSource = Literal["transcripts", "spots"]
NormKind = Literal["log1p_gene", "minmax_patch", "none"]
TissueSource = Literal["auto", "mask", "image", "transcripts", "image_or_transcripts"]


@dataclass(frozen=True)
class SpotHRConfig:
    """``diffst prepare --hr spots``: the spot array as the HR map."""

    factor: int = 2  # k: spots per LR cell side, k×k spots summed (paper protocol: 2; also 3, 4)
    patch: int = 8  # P: patch side in spots (grid cells); a multiple of ``factor``
    stride: int = 4  # step between patch origins in spots; a multiple of ``factor``
    pitch_um: float | None = None  # spot centre distance, µm; None: table's, else 200 / 100
    pitch_tolerance: float = 0.10  # allowed relative pitch disagreement with the coordinates
    min_spot_counts: int = 1  # spots with fewer total counts (all genes) are masked
    min_measured_fraction: float = 0.5  # patches with a smaller share of measured spots skipped
    split_block: int = 16  # side of the spatial split blocks, in spots (2 patches)

    def __post_init__(self) -> None:
        if self.factor < 1:
            raise ConfigError(f"spots.factor must be ≥ 1, got {self.factor}")
        for name in ("patch", "stride"):
            value = getattr(self, name)
            if value < self.factor or value % self.factor:
                raise ConfigError(
                    f"spots.{name} ({value}) must be a positive multiple of spots.factor "
                    f"({self.factor}) so that LR blocks align across patches"
                )
        if self.pitch_um is not None and not self.pitch_um > 0:
            raise ConfigError(f"spots.pitch_um must be > 0 µm, got {self.pitch_um}")
        if not 0.0 < self.pitch_tolerance < 1.0:
            raise ConfigError(
                f"spots.pitch_tolerance must be in (0, 1), got {self.pitch_tolerance}"
            )
        if self.min_spot_counts < 0:
            raise ConfigError(f"spots.min_spot_counts must be ≥ 0, got {self.min_spot_counts}")
        if not 0.0 <= self.min_measured_fraction <= 1.0:
            raise ConfigError(
                f"spots.min_measured_fraction must be in [0, 1], got {self.min_measured_fraction}"
            )
        if self.split_block < 1:
            raise ConfigError(f"spots.split_block must be ≥ 1 spot, got {self.split_block}")


@dataclass(frozen=True)
class ViewConfig:
    """Image views cut for every patch."""

    tissue_px: int = 256  # S: side of the tissue-level view of the whole patch, px (paper: 256)
    cell_grid: int = 16  # n: cell-level tiles per patch side, n×n tiles (paper: 16)
    tile_px: int = 32  # t: side of one cell-level tile, px (2× the tissue view's resolution)
    channels: tuple[str, ...] = ()  # image channels to keep, by name; () keeps all
    intensity_percentiles: tuple[float, float] = (0.5, 99.5)  # per-channel range mapped to 0..255
    # H&E colour normalisation of the views to the training image (Reinhard, CIELAB statistics of
    # the whole section; diffst.sections.stain): "none" or "reinhard" (3-channel brightfield only)
    stain: Literal["none", "reinhard"] = "none"

    def validate(self) -> None:
        """Raise :class:`ConfigError` on impossible sizes."""
        for name in ("tissue_px", "cell_grid", "tile_px"):
            if getattr(self, name) < 1:
                raise ConfigError(f"views.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.stain not in ("none", "reinhard"):
            raise ConfigError(f"views.stain: 'none' or 'reinhard', got {self.stain!r}")
        lo, hi = self.intensity_percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ConfigError(
                f"views.intensity_percentiles must be 0 ≤ lo < hi ≤ 100, got {lo, hi}"
            )


@dataclass(frozen=True)
class SplitConfig:
    """Spatial train/val/test split by square blocks of the section."""

    block_um: float = 1088.0  # block side, µm (paper-size default: 1 patch of 256 × 4.25 µm)
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)  # share of blocks: train, val, test
    seed: int = 0  # permutation seed of the block assignment
    layout: Literal["blocks", "rows", "columns"] = "blocks"  # square blocks, or full-width rows /
    # full-height columns of block_um (stripes across a tissue gradient put it in every split)

    def validate(self) -> None:
        """Raise :class:`ConfigError` on bad fractions or block size."""
        if not self.block_um > 0:
            raise ConfigError(f"split.block_um must be > 0 µm, got {self.block_um}")
        if self.layout not in ("blocks", "rows", "columns"):
            raise ConfigError(
                f"split.layout: {self.layout!r} is not one of ['blocks', 'rows', 'columns']"
            )
        if any(f < 0 for f in self.fractions) or abs(sum(self.fractions) - 1.0) > 1e-6:
            raise ConfigError(f"split.fractions must be ≥ 0 and sum to 1, got {self.fractions}")


@dataclass(frozen=True)
class TissueConfig:
    """How the in-tissue bins are found."""

    source: TissueSource = "auto"  # auto: sample mask, else transcript density, else image
    density_fraction: float = 0.05  # smoothed all-gene density > fraction × its 99th percentile
    smooth_bins: float = 3.0  # Gaussian σ applied before thresholding, in HR bins
    min_patch_fraction: float = 0.5  # patches with a smaller in-tissue share are skipped

    def validate(self) -> None:
        """Raise :class:`ConfigError` on out-of-range thresholds."""
        if not 0.0 < self.density_fraction < 1.0:
            raise ConfigError(
                f"tissue.density_fraction must be in (0, 1), got {self.density_fraction}"
            )
        if not 0.0 <= self.min_patch_fraction <= 1.0:
            raise ConfigError(
                f"tissue.min_patch_fraction must be in [0, 1], got {self.min_patch_fraction}"
            )
        if self.smooth_bins < 0:
            raise ConfigError(f"tissue.smooth_bins must be ≥ 0, got {self.smooth_bins}")


@dataclass(frozen=True)
class PrepareConfig:
    """Everything ``diffst prepare`` needs besides the sample and the output folder."""

    genes: int = 25  # top-K genes by total count (control probes never selected; paper: 25)
    gene_list: Path | None = None  # text file, one gene per line; overrides ``genes``
    # how the top ``genes`` are ranked (training blocks only): "counts" (total molecules, the
    # paper) or "spatial" (Moran's I of log1p counts per LR cell, rook neighbours: genes whose
    # LR map has spatial structure, ties by counts; diffst.preparation.plan.spatial_variability)
    gene_selection: Literal["counts", "spatial"] = "counts"
    hr_um: float = 4.25  # HR bin side, µm (paper: 5120 px × 0.2125 µm/px / 256 bins)
    factor: int = 10  # HR bins per LR cell side (paper: 256 → 26)
    lr: LRMode = "grid"  # grid: exact factor×factor sums; visium: 55 µm spots, 100 µm lattice
    spot_diameter_um: float = 55.0  # Visium spot diameter, µm
    spot_pitch_um: float = 100.0  # Visium centre-to-centre distance, µm
    patch: int = 256  # P: patch side in HR bins (paper: 256)
    stride: int = 256  # step between patch origins in HR bins (< patch overlaps)
    normalisation: NormKind = "log1p_gene"  # dataset transform recorded in the manifest
    max_outside_fraction: float = 0.01  # transcripts allowed outside the image before erroring
    chunk_size: int = 2_000_000  # molecules binned at once (bounds temporary memory)
    hr_storage: Literal["auto", "dense", "sparse"] = "auto"
    # the section's HR counts while patches are cut: "dense" [G, H, W] int32 (4 bytes per gene
    # and HR bin), "sparse" (CSR of the non-zero (bin, gene) counts: memory follows the
    # molecules, not genes × bins), "auto" = sparse when dense would exceed dense_hr_gib
    dense_hr_gib: float = 2.0  # the largest dense HR map hr_storage="auto" keeps
    seed: int = 0  # seed recorded in the manifest (split seed lives in ``split.seed``)
    views: ViewConfig = field(default_factory=ViewConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    tissue: TissueConfig = field(default_factory=TissueConfig)
    hr: HRSource = "transcripts"  # HR map: binned transcripts, or the measured spot array
    spots: SpotHRConfig = field(default_factory=SpotHRConfig)  # options of hr=spots

    def __post_init__(self) -> None:
        if self.genes < 1:
            raise ConfigError(f"genes must be ≥ 1, got {self.genes}")
        if not self.hr_um > 0:
            raise ConfigError(f"hr_um must be > 0 µm, got {self.hr_um}")
        if self.factor < 1:
            raise ConfigError(f"factor must be ≥ 1, got {self.factor}")
        if self.patch < self.factor:
            raise ConfigError(f"patch ({self.patch} bins) must be ≥ factor ({self.factor})")
        if not 1 <= self.stride:
            raise ConfigError(f"stride must be ≥ 1 bin, got {self.stride}")
        if self.spot_diameter_um <= 0 or self.spot_pitch_um < self.spot_diameter_um:
            raise ConfigError(
                f"need 0 < spot_diameter_um ≤ spot_pitch_um, got "
                f"{self.spot_diameter_um}, {self.spot_pitch_um}"
            )
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be ≥ 1, got {self.chunk_size}")
        if self.hr_storage not in ("auto", "dense", "sparse"):
            raise ConfigError(f"hr_storage: 'auto', 'dense' or 'sparse', got {self.hr_storage!r}")
        if not self.dense_hr_gib > 0:
            raise ConfigError(f"dense_hr_gib must be > 0, got {self.dense_hr_gib}")
        if self.gene_selection not in ("counts", "spatial"):
            raise ConfigError(f"gene_selection: 'counts' or 'spatial', got {self.gene_selection!r}")
        self.views.validate()
        self.split.validate()
        self.tissue.validate()

    @property
    def lr_size(self) -> int:
        """p: LR cells per patch side, ``ceil(patch / factor)``."""
        return -(-self.patch // self.factor)
