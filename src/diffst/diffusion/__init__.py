"""diffst.diffusion."""
