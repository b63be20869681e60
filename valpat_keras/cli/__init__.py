"""The `valpat` command line."""
