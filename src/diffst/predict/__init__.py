"""diffst.predict."""
