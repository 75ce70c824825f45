"""Analysis tools for trained generators.

- :mod:`styleforge.analysis.spectrum`: mean power spectra of generated images against a dataset (heatmaps,
  1-D slices, CSV/JSON), as in the alias-free GAN paper's spectral figures (``styleforge spectrum``).
- :mod:`styleforge.analysis.video`: latent interpolation videos and StyleGAN3 translation/rotation sweeps
  (``styleforge video``); MP4 with the optional ``[video]`` extra, GIF otherwise.

Submodules are imported on use; importing this package loads nothing heavy.
"""
