"""Reading NVIDIA's official pickles safely and converting them to styleforge networks.

- :mod:`styleforge.convert.safe_pickle`: an allow-list unpickler; official snapshots load without their code
  and without executing anything from the file (``load_official_pickle(path)`` -> plain values and stubs).
- :mod:`styleforge.convert.official`: ``load_official_pickle(path)`` (converted networks, ADA ``p``, dataset
  options) and ``convert_network(stub)``, which dispatches over the ``CONVERTERS`` lists of the family modules
  ``official_stylegan2``, ``official_stylegan3``, ``official_stylegan_xl`` and ``tensorflow_stylegan2`` (the
  ``(G, D, Gs)`` pickles of the TensorFlow StyleGAN2 / StyleGAN2-ADA releases).
- :mod:`styleforge.convert.rosinality`: rosinality/stylegan2-pytorch checkpoints, both directions.

Official PGGAN pickles (TensorFlow ``tfutil.Network``) are not read.

Most users call :func:`styleforge.load` instead, which accepts official pickles directly.
"""
