"""Analysis tools for trained generators.

- :mod:`styleforge.analysis.spectrum`: mean power spectra of generated images against a dataset (heatmaps,
  1-D slices, CSV/JSON), as in the alias-free GAN paper's spectral figures (``styleforge spectrum``).
- :mod:`styleforge.analysis.video`: latent interpolation videos and StyleGAN3 translation/rotation sweeps
  (``styleforge video``); MP4 with the optional ``[video]`` extra, GIF otherwise.
- :mod:`styleforge.analysis.sticking`: texture sticking (alias-free GAN paper, fig. 1): average of perturbed and
  translated images, the sliced image of an interpolation, a sharpness number (``styleforge sticking``).
- :mod:`styleforge.analysis.contributions`: share of each tRGB level in a skip generator's output (StyleGAN2
  paper, fig. 8; ``styleforge contributions``).
- :mod:`styleforge.analysis.droplets`: detector for localised feature-map spikes, the "water droplets" of
  StyleGAN (StyleGAN2 paper, sec. 2; ``styleforge droplets``).
- :mod:`styleforge.analysis.equivariance_images`: the pairs the EQ-T/EQ-R metrics compare, with the valid region
  marked (``styleforge equivariance --save-images``).

Submodules are imported on use; importing this package loads nothing heavy.
"""
