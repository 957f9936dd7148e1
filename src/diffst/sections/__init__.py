"""A section on its grids: binning, tissue, tiling, image views and the model inputs of any window
(below both preparation and inference, so that both see identical inputs)."""
