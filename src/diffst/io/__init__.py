"""Readers: one per platform, each returning a :class:`~diffst.io.sample.SpatialSample`.

``read_sample(path, platform="auto")`` detects the layout from the files present.
"""

from diffst.io.merfish import read_merfish
from diffst.io.sample import InputError, SpatialImage, SpatialSample, SpotTable

__all__ = [
    "InputError",
    "SpatialImage",
    "SpatialSample",
    "SpotTable",
    "read_merfish",
]
