"""diffst.evaluate."""
