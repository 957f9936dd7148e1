"""diffst.models."""
