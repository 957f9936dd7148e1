"""diffst.prepare."""
