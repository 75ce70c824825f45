"""The ``styleforge`` command group.

Each sub-command lives in its own module ``styleforge.cli.<name>`` exposing a click command called ``command``;
modules are imported only when their command runs (or when ``--help`` lists them), so the CLI starts fast.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

# name -> (module, one-line help shown in `styleforge --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("styleforge.cli.generate", "Generate images or a grid from a network."),
    "convert": ("styleforge.cli.convert", "Convert an official pickle to styleforge's safetensors format."),
    "train": ("styleforge.cli.train", "Train a GAN on a folder, a zip or a built-in dataset."),
    "demo": ("styleforge.cli.demo", "Train a tiny StyleGAN2 on the built-in emoji set and write a report."),
    "dataset": ("styleforge.cli.dataset", "Prepare a dataset zip from a folder or zip of images."),
    "metrics": ("styleforge.cli.metrics", "Compute FID, KID, precision/recall, IS, PPL, ... for a network or folders."),
    "spectrum": ("styleforge.cli.spectrum", "Mean power spectrum of generated images vs a dataset."),
    "video": ("styleforge.cli.video", "Interpolation or StyleGAN3 translation/rotation video."),
    "equivariance": ("styleforge.cli.equivariance", "EQ-T / EQ-R equivariance of a StyleGAN3 network, in dB."),
    "project": ("styleforge.cli.project", "Project a real image into a generator's latent space."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (mod, _) in COMMANDS.items() if importlib.util.find_spec(mod) is not None]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        mod_name, _ = COMMANDS[name]
        if importlib.util.find_spec(mod_name) is None:
            return None
        return importlib.import_module(mod_name).command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="styleforge")
def cli() -> None:
    """styleforge: PGGAN, StyleGAN2, StyleGAN3 and StyleGAN-XL in plain PyTorch."""


if __name__ == "__main__":
    cli()
