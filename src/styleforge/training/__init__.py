"""Training: the StyleGAN2/3 loop (:func:`styleforge.training.loop.train`), its configuration, losses, ADA,
EMA, checkpoints and multi-process support; PGGAN's progressive growing lives in :mod:`.progressive`.

Nothing is imported here eagerly; use the sub-modules (``from styleforge.training.loop import train``).
"""
