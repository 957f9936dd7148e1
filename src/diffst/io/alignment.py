"""Is the image aligned with the transcripts? Density against intensity, under alternatives.

A wrong µm → px transform often passes the "inside the image" check: at half the true scale
every molecule still lands in the image, only in its top-left quarter; with x and y exchanged
a square section still fits. Where the image shows the tissue, transcript density follows the
image signal (nuclear stain, polyT, haematoxylin). :class:`AlignmentGrid` counts molecules in
blocks of the image (``blocks`` along its longer side) while a reader streams them, under the
transform as given and under the mistakes that are easy to make:

* ``xy_exchanged``: the x and y columns exchanged (the transform applied to ``(y, x)``);
* ``image_transposed``: the image's rows and columns exchanged;
* ``scale_x<k>``: every pixel coordinate multiplied by ``k`` (a transform whose scale is off by
  ``k``, e.g. a mosaic downsampled after the transform was written).

:func:`assess_alignment` correlates each count grid with the image's block means (Spearman;
fluorescence as is, brightfield inverted), and :func:`check_alignment` refuses when another
reading fits clearly better than the transform as given, or when molecules fall outside the
image only as given. Images that do not show the tissue (no correlation under any reading)
pass. :func:`warn_doubtful` logs a warning when an alternative fits somewhat better, and when
the section covers little of its image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffst.geometry import AffineTransform, GeometryError

__all__ = [
    "HYPOTHESES",
    "AlignmentGrid",
    "AlignmentReport",
    "assess_alignment",
    "check_alignment",
    "image_signal",
    "warn_doubtful",
]

log = logging.getLogger("diffst.io")

GIVEN = "as_given"
#: alternative readings of the coordinates tried besides the transform as given
HYPOTHESES: dict[str, str] = {
    "xy_exchanged": "with the x and y columns exchanged",
    "image_transposed": "with the image's rows and columns exchanged (a transposed image)",
    "scale_x0.5": "at half the scale of the transform",
    "scale_x2": "at twice the scale of the transform",
    "scale_x0.25": "at a quarter of the scale of the transform",
    "scale_x4": "at four times the scale of the transform",
}
_ADVICE = {
    "xy_exchanged": "exchange the x and y columns of the table",
    "image_transposed": "transpose the image, or check that it belongs to these coordinates",
    "scale": "check the µm → px transform / pixel size; the image may have been resampled "
    "after the transform was written",
}
MIN_CORRELATION = 0.4  # an alternative must reach this Spearman r to be named as the cause
MIN_GAIN = 0.3  # … and beat the transform as given by this much
DOUBT_GAIN = 0.1  # an alternative better by this much (but less than MIN_GAIN) is a warning
INSIDE = 0.99  # share of molecules inside the image for a reading to fit by extent
LOW_COVERAGE = 0.5  # image blocks holding molecules below which a warning is logged
MAX_PER_CHUNK = 200_000  # molecules of one streamed chunk counted (evenly strided)


def _scale(name: str) -> float | None:
    return float(name.removeprefix("scale_x")) if name.startswith("scale_x") else None


@dataclass
class AlignmentGrid:
    """Molecule counts per image block under each reading, filled chunk by chunk.

    Parameters
    ----------
    shape_hw
        Image ``(H, W)``, px.
    transform
        The µm → px map as given.
    blocks
        Blocks along the image's longer side (square blocks).
    """

    shape_hw: tuple[int, int]
    transform: AffineTransform
    blocks: int = 48
    counts: dict[str, np.ndarray] = field(init=False)
    inside: dict[str, int] = field(init=False)
    n: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        h, w = self.shape_hw
        self.side_px = max(h, w) / self.blocks
        self.grid = (max(1, int(np.ceil(h / self.side_px))), max(1, int(np.ceil(w / self.side_px))))
        names = (GIVEN, *HYPOTHESES)
        self.counts = {k: np.zeros(self.grid[0] * self.grid[1], np.int64) for k in names}
        self.inside = dict.fromkeys(names, 0)

    def add(self, xy_um: np.ndarray) -> None:
        """Count molecules ``[n, 2]`` (x, y µm)."""
        if len(xy_um) == 0:
            return
        xy_um = xy_um[:: max(1, len(xy_um) // MAX_PER_CHUNK)]  # block densities need no more
        self.n += len(xy_um)
        px = self.transform.apply(xy_um)
        readings = {
            GIVEN: px,
            "xy_exchanged": self.transform.apply(xy_um[:, ::-1]),
            "image_transposed": px[:, ::-1],
        }
        for name in HYPOTHESES:
            k = _scale(name)
            if k is not None:
                readings[name] = px * k
        h, w = self.shape_hw
        gh, gw = self.grid
        for name, p in readings.items():
            ok = (p[:, 0] >= 0) & (p[:, 0] < w) & (p[:, 1] >= 0) & (p[:, 1] < h)
            self.inside[name] += int(ok.sum())
            row = np.minimum((p[ok, 1] / self.side_px).astype(np.int64), gh - 1)
            col = np.minimum((p[ok, 0] / self.side_px).astype(np.int64), gw - 1)
            self.counts[name] += np.bincount(row * gw + col, minlength=gh * gw)


def image_signal(pixels: object, kind: str, grid: AlignmentGrid) -> np.ndarray:
    """Block means ``[gh, gw]`` of the image's tissue signal (read at a stride).

    Channels are scaled to their 1st–99th percentiles and averaged; brightfield (``"he"``)
    images are inverted, so that stained tissue is high.
    """
    step = max(1, int(grid.side_px // 4))
    px = np.asarray(pixels[::step, ::step, :], dtype=np.float64)  # type: ignore[index]
    flat = px.reshape(-1, px.shape[2])
    lo, hi = np.percentile(flat, [1.0, 99.0], axis=0)
    signal = ((px - lo) / np.maximum(hi - lo, 1e-9)).clip(0.0, 1.0).mean(axis=2)
    if kind == "he":
        signal = 1.0 - signal
    gh, gw = grid.grid
    rows = np.minimum((np.arange(px.shape[0]) * step / grid.side_px).astype(np.int64), gh - 1)
    cols = np.minimum((np.arange(px.shape[1]) * step / grid.side_px).astype(np.int64), gw - 1)
    index = (rows[:, None] * gw + cols[None, :]).ravel()
    total = np.bincount(index, signal.ravel(), minlength=gh * gw)
    return (total / np.maximum(np.bincount(index, minlength=gh * gw), 1)).reshape(gh, gw)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import rankdata

    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass(frozen=True)
class AlignmentReport:
    """How well each reading of the coordinates matches the image."""

    correlation: dict[str, float]  # Spearman r of block counts vs image signal (NaN: undefined)
    inside: dict[str, float]  # share of molecules inside the image
    image_covered: float  # share of image blocks holding molecules, as given
    likely: str | None  # the reading that fits clearly better than the one given, else None
    reason: str  # why ``likely`` was chosen ("correlation" or "extent"), "" when None
    doubtful: str | None = None  # a reading that fits somewhat better (a warning), else None

    def to_dict(self) -> dict[str, object]:
        """Plain mapping (for manifests and metadata)."""
        return {
            "correlation": dict(self.correlation),
            "inside": dict(self.inside),
            "image_covered": self.image_covered,
            "likely": self.likely,
            "doubtful": self.doubtful,
        }


def assess_alignment(grid: AlignmentGrid, signal: np.ndarray) -> AlignmentReport:
    """Compare the readings of ``grid`` with the image ``signal`` (:func:`image_signal`)."""
    n = max(grid.n, 1)
    inside = {k: v / n for k, v in grid.inside.items()}
    corr = {k: _spearman(c, signal.ravel()) if inside[k] > 0 else float("nan")
            for k, c in grid.counts.items()}  # fmt: skip
    given = corr[GIVEN] if np.isfinite(corr[GIVEN]) else -1.0
    likely, reason, doubtful = None, "", None
    alternatives = {k: v for k, v in corr.items() if k != GIVEN and np.isfinite(v)}
    best = max(alternatives, key=lambda k: alternatives[k], default=None)
    plausible = (
        best is not None
        and alternatives[best] >= MIN_CORRELATION
        and inside[best] >= min(INSIDE, inside[GIVEN])
    )
    if plausible and best is not None and alternatives[best] >= given + MIN_GAIN:
        likely, reason = best, "correlation"
    elif plausible and best is not None and alternatives[best] >= given + DOUBT_GAIN:
        doubtful = best
    if likely is None and inside[GIVEN] < INSIDE:
        fits = [k for k in ("xy_exchanged", "image_transposed") if inside[k] >= INSIDE]
        if fits:
            likely, reason = fits[0], "extent"
    covered = float(np.mean(grid.counts[GIVEN] > 0))
    return AlignmentReport(corr, inside, covered, likely, reason, doubtful)


def check_alignment(
    report: AlignmentReport,
    *,
    file: Path | str,
    fields: str,
    image: Path | str | None,
    transform_file: Path | str | None = None,
) -> None:
    """Refuse an implausible alignment with its likely cause.

    Raises
    ------
    GeometryError
        Another reading (:data:`HYPOTHESES`) fits the image clearly better than the
        transform as given: by correlation, or because only it puts the molecules inside.
    """
    given = report.correlation[GIVEN]
    if report.likely is not None:
        name = report.likely
        advice = _ADVICE["scale" if _scale(name) else name]
        if transform_file is not None and _scale(name):
            advice += f" ({transform_file})"
        if report.reason == "correlation":
            as_given = (
                f"at r = {given:.2f} as given ({report.inside[GIVEN]:.0%} of molecules inside "
                "the image)"
                if np.isfinite(given)
                else "as given no molecule falls inside the image"
            )
            evidence = (
                f"transcript density follows the image at Spearman r = "
                f"{report.correlation[name]:.2f} {HYPOTHESES[name]}, but {as_given}"
            )
        else:
            evidence = (
                f"{1 - report.inside[GIVEN]:.0%} of molecules fall outside the image as given, "
                f"{1 - report.inside[name]:.0%} {HYPOTHESES[name]}"
            )
        raise GeometryError(
            f"{file}: fields {fields} do not match the image {image or ''}: {evidence}; "
            f"likely cause: {advice}"
        )


def warn_doubtful(report: AlignmentReport, *, file: Path | str, image: Path | str | None) -> None:
    """Log warnings when another reading fits the image somewhat better than the one given,
    and when the molecules cover little of the image (a legitimately larger image, or a scale
    mistake that :func:`check_alignment` could not name)."""
    given = report.correlation[GIVEN]
    if report.doubtful is not None:
        name = report.doubtful
        advice = _ADVICE["scale" if _scale(name) else name]
        log.warning(
            "%s: transcript density follows the image %s somewhat better (Spearman r = %.2f) "
            "than as given (r = %.2f); check the alignment (a fix would be: %s)",
            file,
            HYPOTHESES[name],
            report.correlation[name],
            given,
            advice,
        )
    if report.image_covered < LOW_COVERAGE:
        log.warning(
            "%s: molecules cover only %.0f%% of the image %s (density vs image r = %.2f); if "
            "the image shows just this section, check the µm → px transform / pixel size",
            file,
            100 * report.image_covered,
            image or "",
            given,
        )
