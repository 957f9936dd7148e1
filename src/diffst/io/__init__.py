"""diffst.io."""
