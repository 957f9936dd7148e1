"""Readers: one per platform, each returning a :class:`~diffst.io.sample.SpatialSample`.

``read_sample(path, platform="auto")`` detects the layout from the files present.
"""

from diffst.io.cosmx import read_cosmx
from diffst.io.detect import detect_platform, read_sample
from diffst.io.h5ad import read_h5ad
from diffst.io.legacy_st import read_legacy_st
from diffst.io.merfish import read_merfish
from diffst.io.sample import InputError, SpatialImage, SpatialSample, SpotTable
from diffst.io.visium import read_visium
from diffst.io.visium_hd import read_visium_hd
from diffst.io.xenium import read_xenium

__all__ = [
    "InputError",
    "SpatialImage",
    "SpatialSample",
    "SpotTable",
    "detect_platform",
    "read_cosmx",
    "read_h5ad",
    "read_legacy_st",
    "read_merfish",
    "read_sample",
    "read_visium",
    "read_visium_hd",
    "read_xenium",
]
