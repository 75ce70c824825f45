"""``styleforge explore``: a browser version of the official interactive visualizer.

- :mod:`styleforge.explore.directions` reads the editing directions written by ``styleforge directions``.
- :mod:`styleforge.explore.render` turns one validated request (latent, truncation, mixing, transform, layer
  view, edits) into an encoded frame; it needs only torch, numpy and pillow.
- :mod:`styleforge.explore.server` serves the page shipped in ``styleforge/assets/explore`` and streams frames
  over a WebSocket; it needs the ``[ui]`` extra (starlette, uvicorn).
"""
