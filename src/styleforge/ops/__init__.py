"""Signal-processing ops (pure functions on NCHW tensors). Every op has ``impl="ref"``, the plain-PyTorch
specification, and a faster path chosen by ``impl="fast"`` or ``"auto"`` that gives the same values.

- :mod:`~styleforge.ops.filters`: ``setup_filter``, Kaiser/jinc low-pass design for StyleGAN3.
- :mod:`~styleforge.ops.upfirdn2d`: ``upfirdn2d``, ``filter2d``, ``upsample2d``, ``downsample2d``.
- :mod:`~styleforge.ops.bias_act`: ``bias_act`` and the ``ACTIVATIONS`` table.
- :mod:`~styleforge.ops.filtered_lrelu`: StyleGAN3's filtered leaky ReLU.
- :mod:`~styleforge.ops.conv2d_resample`: StyleGAN2's resampling convolution.
- :mod:`~styleforge.ops.modulated_conv`: StyleGAN2/3 modulated convolutions.
"""
