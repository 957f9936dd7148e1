"""Image files → channel-last pixel arrays, lazy where the format allows.

* TIFF / OME-TIFF: ``tifffile.memmap`` for uncompressed contiguous data, otherwise a zarr view
  of the file (tiles are read on slicing); axes are reordered to ``[H, W, C]`` lazily.
* JPEG / PNG: decoded with Pillow (these formats cannot be read partially).
"""

from __future__ import annotations

import re
from numbers import Integral
from pathlib import Path

import numpy as np
from PIL import Image

from diffst.io.checks import require_file
from diffst.io.sample import ArrayLike, InputError

__all__ = ["ChannelLast", "ome_pixel_size_um", "read_image", "stack_channels"]

TIFF_SUFFIXES = (".tif", ".tiff", ".btf")
Image.MAX_IMAGE_PIXELS = None  # whole-slide H&E exceeds Pillow's decompression-bomb default


class ChannelLast:
    """Lazy ``[H, W, C]`` view of an array stored with axes ``axes`` (e.g. ``"CYX"``).

    Slicing reads only the requested region of the underlying (memmap / zarr) array.
    """

    def __init__(self, array: ArrayLike, axes: str) -> None:
        if sorted(axes) != sorted("CYX") or len(axes) != len(array.shape):
            raise InputError(f"unsupported image axes {axes!r} for shape {array.shape}")
        self._array = array
        self._order = [axes.index(a) for a in "YXC"]
        self.shape = tuple(int(array.shape[i]) for i in self._order)
        self.dtype = np.dtype(array.dtype)

    def __getitem__(self, key: object) -> np.ndarray:
        keys = list(key) if isinstance(key, tuple) else [key]
        if any(k is Ellipsis or k is None for k in keys):
            raise IndexError("ChannelLast supports integer and slice keys only")
        keys += [slice(None)] * (3 - len(keys))
        under: list[object] = [slice(None)] * 3
        for ours, src in enumerate(self._order):
            under[src] = keys[ours]
        out = np.asarray(self._array[tuple(under)])
        kept = [src for ours, src in enumerate(self._order) if not isinstance(keys[ours], Integral)]
        return np.transpose(out, np.argsort(np.argsort(kept)).tolist()) if kept else out

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        out = self[:, :, :]
        return out if dtype is None else out.astype(dtype)


def _lazy_tiff(path: Path, series: int = 0, level: int = 0) -> tuple[ArrayLike, str]:
    """Open a TIFF series lazily; return the array and its axes string (tifffile letters)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        s = tif.series[series]
        axes = s.axes
        if level == 0:
            try:
                return tifffile.memmap(path, series=series), axes
            except (ValueError, OSError):
                pass
    import zarr

    store = tifffile.imread(path, aszarr=True, series=series, level=level)
    arr = zarr.open(store, mode="r")
    if not isinstance(arr, zarr.Array):
        raise InputError(f"{path}: series {series} level {level} is not a single image array")
    return arr, axes


def _to_cyx(arr: ArrayLike, axes: str, path: Path) -> ChannelLast:
    """Drop singleton axes other than Y/X/C (T, Z, Q…) and return a channel-last view."""
    axes = axes.replace("S", "C")
    extra = [a for a in axes if a not in "CYX"]
    if any(arr.shape[axes.index(a)] != 1 for a in extra):
        raise InputError(
            f"{path}: image has non-singleton axes {extra} (shape {arr.shape}, axes {axes}); "
            "pass a single-plane image (e.g. a focus/MIP projection)"
        )
    if extra:
        arr = np.asarray(arr).reshape(
            [n for n, a in zip(arr.shape, axes, strict=True) if a in "CYX"]
        )
        axes = "".join(a for a in axes if a in "CYX")
    if "C" not in axes:
        arr = np.asarray(arr)[..., None]
        axes += "C"
    return ChannelLast(arr, axes)


def read_image(path: Path | str, *, what: str = "image") -> ArrayLike:
    """Read an image file as ``[H, W, C]`` pixels (lazy for TIFF, decoded for JPEG/PNG).

    RGBA images lose their alpha channel; grayscale images get ``C = 1``.
    """
    path = require_file(Path(path), what)
    if path.suffix.lower() in TIFF_SUFFIXES:
        try:
            arr, axes = _lazy_tiff(path)
        except Exception as err:  # tifffile raises many types for corrupt files
            raise InputError(f"{path}: cannot read the {what} as TIFF: {err}") from err
        return _to_cyx(arr, axes, path)
    try:
        with Image.open(path) as im:
            im.load()
            pixels = np.asarray(im.convert("RGB") if im.mode in ("RGBA", "P", "CMYK") else im)
    except (OSError, SyntaxError) as err:
        raise InputError(f"{path}: cannot decode the {what}: {err}") from err
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return pixels


def stack_channels(images: list[ArrayLike]) -> np.ndarray:
    """Concatenate single- or multi-channel ``[H, W, C]`` images along channels (loads them)."""
    shapes = {tuple(im.shape[:2]) for im in images}
    if len(shapes) != 1:
        raise InputError(f"images to stack differ in shape: {sorted(shapes)}")
    return np.concatenate([np.asarray(im) for im in images], axis=2)


_OME_SIZE = re.compile(r'PhysicalSize([XY])="([0-9.eE+-]+)"')
_OME_UNIT = re.compile(r'PhysicalSize([XY])Unit="([^"]+)"')
_UNIT_TO_UM = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3}


def ome_pixel_size_um(path: Path | str) -> tuple[float, float]:
    """``(PhysicalSizeX, PhysicalSizeY)`` of an OME-TIFF in µm; raises if absent."""
    import tifffile

    path = require_file(Path(path), "OME-TIFF image")
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata or ""
    sizes = dict(_OME_SIZE.findall(xml))
    units = dict(_OME_UNIT.findall(xml))
    if "X" not in sizes or "Y" not in sizes:
        raise InputError(f"{path}: OME metadata lacks field PhysicalSizeX/PhysicalSizeY")
    out = []
    for ax in "XY":
        unit = units.get(ax, "µm")
        if unit not in _UNIT_TO_UM:
            raise InputError(f"{path}: field PhysicalSize{ax}Unit {unit!r} is not supported")
        out.append(float(sizes[ax]) * _UNIT_TO_UM[unit])
    return out[0], out[1]
