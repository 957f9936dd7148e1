"""The spot-array route of ``diffst prepare --hr spots``: measured spots as the HR map, k×k-pooled
spots as LR (patches and store; the lattice and spot grid are in :mod:`diffst.sections`)."""
