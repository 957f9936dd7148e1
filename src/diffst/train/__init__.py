"""diffst.train."""
