"""``styleforge export``: ONNX graphs run by onnxruntime and TorchScript files match PyTorch within 1e-4 for
StyleGAN2 (constant noise), StyleGAN3 (transform input) and StyleGAN-XL (class input), with a dynamic batch.

Run with ``-s`` to see the measured errors. Tracing with ``torch.export`` costs ~10 s per network on one core,
so each family is exported once (small configs) and every check reuses that file.
"""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from styleforge.cli.main import cli
from styleforge.convert.export import ExportableGenerator, ExportOptions, check_export, export_generator
from styleforge.loading import save
from styleforge.models.registry import create_model
from styleforge.utils.errors import UserInputError
from tests.conftest import require_module

ATOL = 1e-4
# family -> (preset, overrides that keep the graph small, exports a transform input)
FAMILIES = {
    "stylegan2": ("stylegan2-tiny", {"img_resolution": 8}, False),
    "stylegan3": ("stylegan3-t-tiny", {"num_layers": 3, "num_critical": 1}, True),
    "stylegan-xl": ("stylegan-xl-stem-tiny", {"num_layers": 3, "num_critical": 1}, True),
}
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")


def _generator(family: str) -> torch.nn.Module:
    preset, overrides, _ = FAMILIES[family]
    G = create_model(preset, "G", **overrides).eval()
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():  # move every tensor off its initial value, so that each one matters
        for t in G.state_dict().values():
            if t.is_floating_point():
                t.add_(0.02 * torch.randn(t.shape, generator=gen))
    return G


@pytest.mark.parametrize("family", list(FAMILIES))
def test_onnx_matches_pytorch(tmp_path, family):
    require_module("onnxruntime", "onnx")
    require_module("onnxscript", "onnx")
    G = _generator(family)
    options = ExportOptions(format="onnx", dynamic_batch=True, batch_size=2, transform_input=FAMILIES[family][2])
    path = export_generator(G, tmp_path / "G.onnx", options)
    import onnxruntime

    names = [i.name for i in onnxruntime.InferenceSession(str(path)).get_inputs()]
    expected = ["z", *(["class_idx"] if G.c_dim else []), "truncation_psi"]
    expected += ["transform"] if options.transform_input else []
    assert names == expected
    for batch_seed in (1, 2):  # batch 3 (not the traced 2) and another seed
        err = check_export(G, path, options, seed=batch_seed)
        print(f"[{family}] onnx max abs err {err:.3e}")
        assert err is not None and err <= ATOL


@pytest.mark.parametrize("family", list(FAMILIES))
def test_torchscript_matches_pytorch(tmp_path, family):
    G = _generator(family)
    options = ExportOptions(format="torchscript", batch_size=2, dynamic_batch=True, transform_input=FAMILIES[family][2])
    path = export_generator(G, tmp_path / "G.pt", options)
    err = check_export(G, path, options)
    print(f"[{family}] torchscript max abs err {err:.3e}")
    assert err <= ATOL


@pytest.mark.parametrize("part", ["mapping", "synthesis"])
def test_mapping_and_synthesis_parts(tmp_path, part):
    G = _generator("stylegan-xl")
    options = ExportOptions(format="torchscript", part=part, batch_size=2, dynamic_batch=True)
    path = export_generator(G, tmp_path / f"{part}.pt", options)
    assert check_export(G, path, options) <= ATOL
    names = ExportableGenerator(G, options).input_names()
    assert names == (["ws"] if part == "synthesis" else ["z", "class_idx", "truncation_psi"])


def test_wrapper_computes_what_the_generator_computes():
    G = _generator("stylegan2")
    wrapper = ExportableGenerator(G, ExportOptions(resolution=16))
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        img = wrapper(z, torch.tensor([0.7]))
        want = G(z, None, truncation_psi=0.7, noise_mode="const")
    assert img.shape == (2, 3, 16, 16)
    assert torch.allclose(torch.nn.functional.interpolate(want, size=16, mode="bilinear"), img, atol=1e-5)
    with pytest.raises(UserInputError, match="no input transform"):
        ExportableGenerator(G, ExportOptions(transform_input=True))


def test_cli_exports_and_checks(tmp_path):
    G = _generator("stylegan3")
    save(tmp_path / "net", G_ema=G)
    out = tmp_path / "G.pt"
    result = CliRunner().invoke(cli, ["export", "--network", str(tmp_path / "net"), "--format", "torchscript",
                                      "--out", str(out), "--batch", "2", "--transform-input", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "Max abs difference from PyTorch" in result.output
    bad = CliRunner().invoke(cli, ["export", "--network", str(tmp_path / "net"), "--out", str(out), "--batch", "0"])
    assert bad.exit_code == 1 and "--batch expects" in bad.output
