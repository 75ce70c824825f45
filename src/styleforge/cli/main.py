"""The ``styleforge`` command group.

Each sub-command lives in its own module ``styleforge.cli.<name>`` exposing a click command called ``command``;
modules are imported only when their command runs (or when ``--help`` lists them), so the CLI starts fast.
"""

from __future__ import annotations

import importlib

import click

# name -> (module, one-line help shown in `styleforge --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("styleforge.cli.generate", "Generate images or a grid from a network."),
    "convert": ("styleforge.cli.convert", "Convert official/TensorFlow pickles and rosinality checkpoints (both ways)"),
    "export": ("styleforge.cli.export", "Export a generator as ONNX or TorchScript."),
    "train": ("styleforge.cli.train", "Train a GAN on a folder, a zip or a built-in dataset."),
    "demo": ("styleforge.cli.demo", "Train a tiny StyleGAN2 on the built-in emoji set and write a report."),
    "dataset": ("styleforge.cli.dataset", "Prepare a dataset zip from a folder or zip of images."),
    "metrics": ("styleforge.cli.metrics", "Compute FID, KID, precision/recall, IS, PPL, ... for a network or folders."),
    "spectrum": ("styleforge.cli.spectrum", "Mean power spectrum of generated images vs a dataset."),
    "video": ("styleforge.cli.video", "Interpolation or StyleGAN3 translation/rotation video."),
    "equivariance": ("styleforge.cli.equivariance", "EQ-T / EQ-R equivariance of a StyleGAN3 network, in dB."),
    "sticking": ("styleforge.cli.sticking", "Texture sticking: average of perturbed images, sliced image, sharpness."),
    "contributions": ("styleforge.cli.contributions", "Share of each tRGB level in a skip generator's output."),
    "droplets": ("styleforge.cli.droplets", "Detect localised feature-map spikes (droplet artifacts) per layer."),
    "project": ("styleforge.cli.project", "Project a real image into a generator's latent space."),
    "directions": ("styleforge.cli.directions", "Editing directions (SeFa, GANSpace, InterFaceGAN) to dirs.npz."),
    "edit": ("styleforge.cli.edit", "Edit latents along a direction and write strips of the edited images."),
    "style-mix": ("styleforge.cli.style_mix", "The style-mixing grid of row and column seeds."),
    "attribute": ("styleforge.cli.attribute", "Project images, report reconstruction distances (generated vs real)."),
    "explore": ("styleforge.cli.explore", "Explore networks interactively in a web browser (needs [ui])."),
    "centroids": ("styleforge.cli.centroids", "k-means centroids of W for multi-modal truncation (--centroids)."),
}


class _LazyGroup(click.Group):
    """Lists every entry of :data:`COMMANDS` (help text from the table, nothing imported) and imports a command's
    module only when it runs. A listed command whose module is missing is an error, never silently hidden."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        mod_name, _ = COMMANDS[name]
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name is not None and mod_name.startswith(e.name):
                raise click.ClickException(
                    f"The command {name!r} is registered but its module {mod_name} is missing; the styleforge "
                    "installation is incomplete (reinstall it, or remove the entry from COMMANDS)."
                ) from e
            raise
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, text) for name, (_, text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="styleforge")
def cli() -> None:
    """styleforge: PGGAN, StyleGAN2, StyleGAN3 and StyleGAN-XL in plain PyTorch."""


if __name__ == "__main__":
    cli()
