"""Platform detection from the files present, and :func:`read_sample` dispatch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffst.io._constants import (
    CosmxFile,
    MerfishFile,
    Platform,
    VisiumFile,
    XeniumFile,
)
from diffst.io.sample import InputError, SpatialSample

__all__ = ["READABLE_PLATFORMS", "detect_platform", "find_legacy_st_files", "read_sample"]

#: platforms with a reader (the values ``read_sample(platform=...)`` and ``--platform`` accept)
READABLE_PLATFORMS: tuple[str, ...] = tuple(p.value for p in Platform if p != Platform.SYNTHETIC)

_LAYOUTS = (
    f"xenium: {XeniumFile.TRANSCRIPTS_PARQUET} or {XeniumFile.TRANSCRIPTS_CSV}; "
    f"visium_hd: {VisiumFile.BINNED_DIR}/; "
    f"visium: {VisiumFile.MATRIX_H5} + {VisiumFile.SPATIAL_DIR}/; "
    f"merfish: {MerfishFile.TRANSCRIPTS} / {MerfishFile.TRANSCRIPTS_MINI}; "
    f"cosmx: *{CosmxFile.TX_SUFFIX}; "
    "legacy_st: *.tsv.gz counts + spot table *.tsv + *.jpg, or per-section sub-folders "
    "(<id>.tsv.gz, <id>_selection.tsv, <id>/*.jpg); h5ad: a .h5ad file"
)


def find_legacy_st_files(
    folder: Path, section: str | None = None
) -> tuple[Path, Path, Path | None] | None:
    """``(counts.tsv.gz, spots.tsv, image.jpg)`` of a legacy-ST section in ``folder``.

    A folder holding exactly one of each is one section (``section`` must then be ``None`` or
    its id). A folder laid out as the data are published — counts, spot tables and images in
    parallel sub-folders keyed by section id (:func:`legacy_st_sections`) — needs ``section``
    when it holds several. ``None`` when ``folder`` is no legacy-ST layout at all.
    """
    from diffst.io.legacy_st import legacy_st_sections

    counts = sorted(folder.glob("*.tsv.gz"))
    spots = sorted(folder.glob("*.tsv"))
    images = sorted(p for ext in ("*.jpg", "*.jpeg") for p in folder.glob(ext))
    if section is None and len(counts) == 1 and len(spots) == 1 and len(images) == 1:
        return counts[0], spots[0], images[0]
    sections = legacy_st_sections(folder)
    if not sections:
        return None
    if section is None:
        if len(sections) == 1:
            return next(iter(sections.values()))
        raise InputError(
            f"{folder}: holds {len(sections)} legacy-ST sections; choose one with --section "
            f"(Python: section=...): {', '.join(sorted(sections))}"
        )
    if section not in sections:
        raise InputError(
            f"{folder}: no legacy-ST section {section!r}; sections: {', '.join(sorted(sections))}"
        )
    return sections[section]


def _is_legacy_st(folder: Path) -> bool:
    try:
        return find_legacy_st_files(folder) is not None
    except InputError:  # several sections: the layout is known, the choice comes later
        return True


def detect_platform(path: Path | str) -> Platform:
    """Name the platform whose output layout ``path`` has; raise for unknown layouts."""
    p = Path(path)
    if p.is_file():
        if p.suffix == ".h5ad":
            return Platform.H5AD
        raise InputError(f"{p}: unknown file type (expected a .h5ad file or an output folder)")
    if not p.is_dir():
        raise InputError(f"{p}: no such file or folder")
    has = {q.name for q in p.iterdir()}
    if {XeniumFile.TRANSCRIPTS_PARQUET, XeniumFile.TRANSCRIPTS_CSV} & has:
        return Platform.XENIUM
    if VisiumFile.BINNED_DIR in has or (
        p.name.startswith("square_") and VisiumFile.MATRIX_H5 in has
    ):
        return Platform.VISIUM_HD
    if VisiumFile.MATRIX_H5 in has and VisiumFile.SPATIAL_DIR in has:
        return Platform.VISIUM
    if {MerfishFile.TRANSCRIPTS, MerfishFile.TRANSCRIPTS_GZ, MerfishFile.TRANSCRIPTS_MINI} & has:
        return Platform.MERFISH
    if any(n.endswith((CosmxFile.TX_SUFFIX, CosmxFile.TX_SUFFIX_GZ)) for n in has):
        return Platform.COSMX
    if _is_legacy_st(p):
        return Platform.LEGACY_ST
    raise InputError(
        f"{p}: unknown file layout; files present: {sorted(has)[:15]}. Known: {_LAYOUTS}"
    )


def read_sample(
    path: Path | str, platform: str = "auto", *, section: str | None = None, **kwargs: Any
) -> SpatialSample:
    """Read any supported output with the reader of ``platform`` (``"auto"``: detected).

    ``section`` picks one section of a folder that holds several (legacy ST as published);
    ``kwargs`` go to the reader (e.g. ``um_per_px=`` for CosMx, ``bin_um=`` for Visium HD).
    """
    p = Path(path)
    if platform != "auto" and platform not in READABLE_PLATFORMS:
        raise InputError(
            f"platform {platform!r} has no reader; choose auto or one of {list(READABLE_PLATFORMS)}"
        )
    name = detect_platform(p) if platform == "auto" else Platform(platform)
    if section is not None and name != Platform.LEGACY_ST:
        raise InputError(f"{p}: --section applies to multi-section legacy-ST folders, not {name}")
    if name == Platform.MERFISH:
        from diffst.io.merfish import read_merfish

        return read_merfish(p, **kwargs)
    if name == Platform.XENIUM:
        from diffst.io.xenium import read_xenium

        return read_xenium(p, **kwargs)
    if name == Platform.VISIUM:
        from diffst.io.visium import read_visium

        return read_visium(p, **kwargs)
    if name == Platform.VISIUM_HD:
        from diffst.io.visium_hd import read_visium_hd

        return read_visium_hd(p, **kwargs)
    if name == Platform.H5AD:
        from diffst.io.h5ad import read_h5ad

        return read_h5ad(p, **kwargs)
    if name == Platform.COSMX:
        from diffst.io.cosmx import read_cosmx

        return read_cosmx(p, **kwargs)
    if name == Platform.LEGACY_ST:
        from diffst.io.legacy_st import read_legacy_st

        files = find_legacy_st_files(p, section) if p.is_dir() else None
        if files is None:
            raise InputError(
                f"{p}: expected one *.tsv.gz, one *.tsv and one *.jpg, or per-section "
                "sub-folders of counts, spot tables and images (legacy ST)"
            )
        return read_legacy_st(*files, **kwargs)
    raise InputError(f"{p}: platform {platform!r} has no reader")
