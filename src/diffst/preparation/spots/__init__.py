"""The spot-array route of ``diffst prepare --hr spots``: measured spots as the HR map, k×k-pooled
spots as LR (lattice, spot grid, patches, store)."""
