"""The ``diffst`` sub-commands: argument parsing and printing around :mod:`diffst.api` and the
stage functions (one module per command, listed in :mod:`diffst.cli`)."""
