"""diffst.evaluation."""
