"""Command-line interface: thin click wrappers around library functions."""
