"""Networks, one file per family. Importing this package registers every network class and preset."""

from styleforge.models.registry import _load_all as _register_all

_register_all()
