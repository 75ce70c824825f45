"""``styleforge export``: a generator as an ONNX graph or a TorchScript file."""

from __future__ import annotations

import click

from styleforge.cli._common import NETWORK_HELP, load_generator, user_errors
from styleforge.utils.errors import UserInputError

__all__ = ["command", "parse_batch"]


def parse_batch(text: str) -> tuple[bool, int]:
    """``"dynamic"`` -> ``(True, 2)``; ``"4"`` -> ``(False, 4)``."""
    if text == "dynamic":
        return True, 2
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserInputError(f"--batch expects 'dynamic' or a positive batch size, got {text!r}.")
    return False, value


@click.command(name="export")
@click.option("--network", required=True, help=NETWORK_HELP)
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), default="onnx", show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output file (G.onnx, G.pt).")
@click.option("--resolution", type=click.IntRange(min=1), default=None, help="Resize the images to this size.")
@click.option("--batch", default="1", show_default=True, help="'dynamic' (ONNX: any batch size) or a fixed size.")
@click.option(
    "--part",
    type=click.Choice(["full", "mapping", "synthesis"]),
    default="full",
    show_default=True,
    help="full: z (+ class_idx), truncation_psi -> img. mapping: ... -> ws. synthesis: ws -> img.",
)
@click.option("--transform-input", is_flag=True, help="StyleGAN3 / XL: add a [N, 3, 3] transform input.")
@click.option("--trunc-cutoff", "truncation_cutoff", type=int, default=None, help="Truncate only the first N ws.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Run the exported file (onnxruntime / torch.jit) and print its difference from PyTorch.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@user_errors
def command(network: str, fmt: str, out: str, resolution: int | None, batch: str, part: str, transform_input: bool,
            truncation_cutoff: int | None, check: bool, progress: bool) -> None:
    """Export the generator of --network (G_ema) for inference outside styleforge.

    Inputs of the graph: z [N, z_dim] float32, class_idx [N] int64 (conditional networks), truncation_psi [1]
    float32, transform [N, 3, 3] (with --transform-input); output img [N, C, H, W] in [-1, 1]. StyleGAN2 uses its
    constant noise. ONNX needs the [onnx] extra (pip install 'styleforge[onnx]').
    """
    from tqdm import tqdm

    from styleforge.convert.export import ExportOptions, check_export, export_generator

    dynamic, batch_size = parse_batch(batch)
    options = ExportOptions(format=fmt, part=part, resolution=resolution, dynamic_batch=dynamic,
                            batch_size=batch_size, transform_input=transform_input,
                            truncation_cutoff=truncation_cutoff)
    steps = ["load", "export"] + (["check"] if check else [])
    # disable=None: shown on a terminal only (not in pipes, logs or tests)
    with tqdm(total=len(steps), desc="export", unit="step", disable=None if progress else True, leave=False) as bar:
        bar.set_postfix_str("loading")
        G = load_generator(network, "cpu")
        bar.update()
        bar.set_postfix_str(f"writing {fmt}")
        path = export_generator(G, out, options)
        bar.update()
        error = None
        if check:
            bar.set_postfix_str("checking")
            error = check_export(G, path, options)
            bar.update()
    click.echo(f"Wrote {path} ({fmt}, {part}, batch {'dynamic' if dynamic else batch_size}).")
    if error is not None:
        click.echo(f"Max abs difference from PyTorch on test inputs: {error:.3g}")
    elif check:
        click.echo("Not checked: onnxruntime is not installed (pip install 'styleforge[onnx]').")
