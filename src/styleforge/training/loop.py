"""``train()``: the one entry point of every training recipe (StyleGAN2/3, PGGAN).

The loop itself is :mod:`styleforge.training.engine`; the recipes are :mod:`styleforge.training.stylegan` and
:mod:`styleforge.training.progressive`. This module picks the recipe from the config.
"""

from __future__ import annotations

from typing import Any

from styleforge.training.config import TrainConfig
from styleforge.training.engine import NonFiniteLossError, TrainResult, run_description, run_training
from styleforge.training.stylegan import StyleGANRecipe

__all__ = ["train", "TrainResult", "NonFiniteLossError", "run_description"]

def train(cfg: TrainConfig, **options: Any) -> TrainResult:
    """Train G and D as ``cfg`` says with the recipe of its family; returns where the results are.

    Args:
        cfg: the resolved configuration (:func:`styleforge.training.config.make_train_config`).
        **options: the keyword arguments of :func:`styleforge.training.engine.run_training`:
            ``run_dir`` (write into this directory instead of a new numbered one under ``cfg.outdir``);
            ``resume`` (``"latest"``, a run directory or its ``training_state.pt``: continue exactly, in place, with
            ``cfg`` equal to the saved configuration except for the schedule fields ``kimg``, ``tick_kimg``,
            ``snap``, ``image_snap``, ``metrics``; or an exported snapshot / official pickle: a new run from its
            weights with the official fine-tuning defaults); ``allow_change`` (fields or CLI flag names, e.g.
            ``("gamma", "mirror")``, that may differ from the saved configuration); ``dataset`` (an opened dataset
            instead of ``cfg.data``); ``dist_ctx`` (default: from torchrun's environment); ``device``; ``log``
            (where progress lines go; default print on rank 0); ``progress_bar``; ``time_limit_s`` (stop with a
            final snapshot after the first minibatch that ends past this many seconds); ``keep_states`` (training states
            kept, default 2: the fallback when the newest is damaged). The first Ctrl-C (SIGINT) stops after the
            current minibatch with a snapshot and a training state (``TrainResult.interrupted``); a second one
            raises ``KeyboardInterrupt`` at once.

    Raises:
        NonFiniteLossError: a phase's losses were NaN/inf ``cfg.nonfinite_patience`` times in a row.
        UserInputError: bad data, options or resume path, or a resume that would change the run.
        DiskFullError: a write failed for lack of space (the message names the directory and the space needed).
    """
    if cfg.xl is not None:
        from styleforge.training.stylegan_xl import StyleGANXLRecipe

        return run_training(cfg, StyleGANXLRecipe, **options)
    if cfg.progressive is not None:
        from styleforge.training.progressive import PGGANRecipe

        return run_training(cfg, PGGANRecipe, **options)
    return run_training(cfg, StyleGANRecipe, **options)
