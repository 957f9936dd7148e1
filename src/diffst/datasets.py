"""Loaders for the small real datasets bundled in the repository's ``data/`` folder.

The data are not part of the installed package. They are looked up in ``$DIFFST_DATA`` when
that variable is set, else in the ``data/`` folder of the source checkout this package was
installed from (``pip install -e .``). ``data/README.md`` lists origins and licences.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from diffst.io.sample import InputError, SpatialSample

__all__ = [
    "BUNDLED",
    "COSMX_ASSUMED_UM_PER_PX",
    "cosmx_mini",
    "data_root",
    "load_sample",
    "merfish_mini",
    "visium_h5ad_mini",
    "visium_mini",
]

DATA_ENV = "DIFFST_DATA"
MERFISH_DIR = "giotto_vizgen_mini"
COSMX_DIR = "giotto_cosmx_mini"
VISIUM_DIR = "squidpy_visium"

COSMX_ASSUMED_UM_PER_PX = 0.12028
"""CosMx pixel size (µm/px) published for recent CosMx releases. It is **not** stated in the
bundled files (older releases used 0.18 µm/px); :func:`cosmx_mini` uses it only as an explicit,
documented assumption of the caller."""


def data_root() -> Path:
    """Folder holding the bundled datasets (``$DIFFST_DATA`` or the checkout's ``data/``)."""
    env = os.environ.get(DATA_ENV)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise InputError(f"${DATA_ENV}={env}: not a folder")
        return root
    return Path(__file__).resolve().parents[2] / "data"


def _dataset_dir(name: str) -> Path:
    folder = data_root() / name
    if not folder.is_dir():
        raise InputError(
            f"{folder}: bundled dataset {name!r} not found. Run from a source checkout of diffst "
            f"(the repository's data/{name}/ folder), or copy that folder into a directory and "
            f"point ${DATA_ENV} to it"
        )
    return folder


def merfish_mini(
    z_planes: Sequence[int] = (0, 1),
    image: Literal["dapi", "polyt", "both"] | Sequence[str] | None = "both",
) -> SpatialSample:
    """Vizgen MERFISH mouse-brain mini region (GiottoData).

    80,343 transcripts over z-planes 0 and 1 (450 genes + 109 ``Blank-*`` controls) in a
    500 × 450 µm window; DAPI and polyT images of z-plane 0, ``[4143, 4603, C]`` at
    0.108627 µm/px.

    Parameters
    ----------
    z_planes
        Transcript z-planes to keep (0 and/or 1).
    image
        ``"dapi"``, ``"polyt"``, ``"both"`` (channels DAPI, polyT), channel names such as
        ``["polyT"]``, or ``None``.
    """
    from diffst.io.merfish import read_merfish

    return read_merfish(_dataset_dir(MERFISH_DIR), z_planes=z_planes, image=image)


def cosmx_mini(um_per_px: float = COSMX_ASSUMED_UM_PER_PX) -> SpatialSample:
    """CosMx NSCLC "Lung12" crops of FOVs 2 and 3 (GiottoData): 25,825 transcripts.

    The files do not state the pixel size; ``um_per_px`` (default
    :data:`COSMX_ASSUMED_UM_PER_PX` = 0.12028) is an assumption made by the caller and is
    recorded in ``sample.metadata["um_per_px_source"]``.
    """
    from diffst.io.cosmx import read_cosmx

    sample = read_cosmx(_dataset_dir(COSMX_DIR), um_per_px=um_per_px)
    sample.metadata["um_per_px_source"] = "assumed by the caller (not stated in the files)"
    return sample


def visium_mini(image: Literal["lowres"] | None = "lowres") -> SpatialSample:
    """squidpy's Space Ranger fixture: 100 spots × 100 genes (Ensembl ids), lowres H&E.

    The hires PNG of this fixture is a blank placeholder, hence only ``"lowres"``.
    """
    from diffst.io.visium import read_visium

    return read_visium(_dataset_dir(VISIUM_DIR) / "visium_outs", image=image)


def visium_h5ad_mini(image: Literal["lowres", "fullres"] = "fullres") -> SpatialSample:
    """squidpy's ``test_data.h5ad``: 49 spots × 1,999 genes, **log-normalised** (not raw).

    ``image="fullres"`` uses ``test_img.jpg`` (the full-resolution H&E crop that matches
    ``obsm['spatial']``); ``"lowres"`` the stored lowres image. The stored hires image is
    random noise and is never used.
    """
    from diffst.io.h5ad import read_h5ad

    folder = _dataset_dir(VISIUM_DIR)
    full = folder / "test_img.jpg" if image == "fullres" else None
    return read_h5ad(folder / "test_data.h5ad", image="lowres" if full is None else full)


#: bundled datasets that command-line ``--input``/``--sample`` options accept by name
BUNDLED: tuple[str, ...] = ("merfish_mini", "cosmx_mini", "visium_mini", "visium_h5ad_mini")


def load_sample(
    spec: str | os.PathLike[str],
    platform: str = "auto",
    image_channels: Sequence[str] | None = None,
    section: str | None = None,
    he_image: str | os.PathLike[str] | None = None,
    he_alignment: str | os.PathLike[str] | None = None,
) -> SpatialSample:
    """A bundled dataset by name (:data:`BUNDLED`), else the section at path ``spec``.

    An existing path always wins over a bundled name; ``platform`` selects the reader of a path
    (``"auto"`` detects it from the files present). ``image_channels`` picks the mosaics of a
    MERFISH section (``["DAPI"]``, ``["polyT"]`` or both; default DAPI for a folder, both for
    ``merfish_mini``); other platforms read every channel of their image. ``section`` picks
    one section of a folder that holds several (legacy ST as published). ``he_image`` and
    ``he_alignment`` read a Xenium folder with its registered post-run H&E (and the 10x
    alignment CSV, H&E px → morphology px) as the image instead of the morphology mosaic.
    """
    from diffst.io import detect_platform, read_sample

    bundled = str(spec) in BUNDLED and not Path(spec).exists()
    if image_channels is not None:
        kind = "merfish" if str(spec) == "merfish_mini" else None
        if not bundled:
            kind = str(detect_platform(Path(spec)) if platform == "auto" else platform)
        if kind != "merfish":
            raise InputError(
                f"{spec}: image channels are chosen by reader only for MERFISH folders; this "
                "image is read whole (select its channels with views.channels in prepare)"
            )
    if section is not None and bundled:
        raise InputError(f"{spec}: a bundled dataset has one section; --section does not apply")
    if he_image is not None or he_alignment is not None:
        return _xenium_with_he(spec, platform, bundled, section, he_image, he_alignment)
    if bundled:
        loader = globals()[str(spec)]
        sample: SpatialSample = (
            loader() if image_channels is None else loader(image=list(image_channels))
        )
        return sample
    if image_channels is not None:
        return read_sample(
            Path(spec), platform=platform, section=section, image=list(image_channels)
        )
    return read_sample(Path(spec), platform=platform, section=section)


def _xenium_with_he(
    spec: str | os.PathLike[str],
    platform: str,
    bundled: bool,
    section: str | None,
    he_image: str | os.PathLike[str] | None,
    he_alignment: str | os.PathLike[str] | None,
) -> SpatialSample:
    """A Xenium folder read with its registered H&E (both files required, Xenium only)."""
    from diffst.io import detect_platform, read_sample

    if he_image is None or he_alignment is None:
        raise InputError(
            f"{spec}: --he-image and --he-alignment go together (the registered H&E and its "
            "10x alignment CSV, H&E px → morphology px)"
        )
    if bundled:
        kind = "a bundled dataset"
    else:
        kind = str(detect_platform(Path(spec)) if platform == "auto" else platform)
    if kind != "xenium":
        raise InputError(
            f"{spec}: --he-image/--he-alignment apply to Xenium folders (this input is {kind}); "
            "other platforms read their own H&E"
        )
    for flag, path in (("--he-image", he_image), ("--he-alignment", he_alignment)):
        if not Path(path).is_file():
            raise InputError(f"{path}: {flag} file not found")
    return read_sample(
        Path(spec), platform="xenium", section=section, image=Path(he_image),
        alignment=Path(he_alignment),
    )  # fmt: skip
