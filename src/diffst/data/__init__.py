"""diffst.data."""
