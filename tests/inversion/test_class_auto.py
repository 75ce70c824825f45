"""``project --class auto`` on ImageNet-conditional networks (c_dim 1000): the candidates are the top-5 of the
ImageNet classifier, the chosen class is the candidate whose projection ends with the lowest distance, and
result.json records both. A tiny StyleGAN2 with c_dim 1000 stands in for an ImageNet network."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import styleforge
from styleforge.cli.main import cli
from styleforge.feature_nets.efficientnet_lite import EfficientNetLite0, load_efficientnet_lite0
from styleforge.inversion.projector import ProjectorConfig, w_statistics
from styleforge.inversion.run import AUTO_CANDIDATES, project_targets
from styleforge.loading import save
from styleforge.utils.images import save_png, to_uint8
from tests.feature_nets.test_efficientnet_lite import _package_state, _package_weights_or_skip

TARGET_CLASS = 503
W_AVG_SAMPLES = 64
#: the injected classifier's ranking: the class the target was generated with comes fourth, not first
RANKING = (17, 640, 2, TARGET_CLASS, 999)


class RankingClassifier(torch.nn.Module):
    """Logits that rank :data:`RANKING` first (in that order) whatever the image; records what it was shown."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        logits = torch.zeros(x.shape[0], 1000)
        for rank, k in enumerate(RANKING):
            logits[:, k] = 10.0 - rank
        return logits


@pytest.fixture(scope="module")
def imagenet_G():
    """A tiny StyleGAN2 with 1000 classes, parameters moved off their initial values so that classes differ."""
    torch.manual_seed(2)
    G = styleforge.create_model("stylegan2-tiny", c_dim=1000).eval()
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.05 * torch.randn_like(p))
        c = F.one_hot(torch.randint(0, 1000, (256,)), 1000).float()
        G.mapping.w_avg.copy_(G.mapping(torch.randn(256, G.z_dim), c)[:, 0].mean(0))
    return G.requires_grad_(False)


@pytest.fixture(scope="module")
def target(imagenet_G):
    """The mean image of :data:`TARGET_CLASS` (its w_avg over the projector's samples, stored noise),
    ``[1, 3, 16, 16]``: the projection of that class starts at the target, the others do not."""
    G = imagenet_G
    c = F.one_hot(torch.tensor([TARGET_CLASS]), 1000).float()
    w_avg, _ = w_statistics(G, c, W_AVG_SAMPLES)
    with torch.no_grad():
        return G.synthesis(w_avg[:, None].repeat(1, G.num_ws, 1), noise_mode="const").clamp(-1, 1)


def _check_recorded(info: dict, candidates: list[int]) -> None:
    """result.json: the candidates in ranking order with their distances, the chosen class the lowest of them."""
    assert [int(k) for k in info["candidates"]] == candidates  # JSON object keys are strings
    best = min(info["candidates"].items(), key=lambda kv: kv[1])
    assert info["class_idx"] == int(best[0])
    assert info["distance"] == pytest.approx(best[1], rel=1e-6)
    assert len(set(info["candidates"].values())) == len(candidates)  # every class was projected on its own


def test_candidates_are_the_classifier_top5_and_the_lowest_distance_wins(imagenet_G, target, cheap_distance,
                                                                            tmp_path):
    classifier = RankingClassifier()
    cfg = ProjectorConfig(num_steps=8, w_avg_samples=W_AVG_SAMPLES, noise_init="const")
    (res,) = project_targets(imagenet_G, ["t"], target, cheap_distance, tmp_path, cfg, class_spec="auto",
                             video=False, single=True, classifier=classifier)
    (shown,) = classifier.seen  # the classifier ran once, on the target at its input size
    assert shown.shape == (1, 3, 224, 224)
    assert torch.allclose(shown.mean(), target.mean(), atol=0.02) and shown.abs().max() <= 1
    assert list(res.candidates) == list(RANKING)
    assert res.class_idx == min(res.candidates, key=res.candidates.get)
    assert res.distance == res.candidates[res.class_idx]
    # the target's own class ends lowest although the classifier ranked it fourth: the choice is the projections'
    assert res.class_idx == TARGET_CLASS
    _check_recorded(json.loads((tmp_path / "result.json").read_text()), list(RANKING))


def _topk_of(weights, image_file) -> list[int]:
    """The lite0 top-5 of the target file as the projector reads it (16 px), resized to 224 (bilinear, antialiased)."""
    from styleforge.inversion.targets import load_targets

    _, x = load_targets(str(image_file), (16, 16), 3)
    x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        return load_efficientnet_lite0(weights)(x)[0].topk(AUTO_CANDIDATES).indices.tolist()


def _installed_lite0():
    from styleforge.feature_nets.efficientnet_lite import find_efficientnet_lite0_weights

    try:
        return find_efficientnet_lite0_weights()
    except FileNotFoundError:
        return None


@pytest.mark.parametrize("weights", ["made", "package"])
def test_cli_class_auto_ranks_with_the_lite0_classifier(imagenet_G, target, tmp_path, weights):
    """End to end through `styleforge project`: with --lite0 FILE (weights made here) the classifier is that file,
    not the installed package; with the package's real ImageNet weights (skipped when absent, except in CI)."""
    if weights == "made":
        torch.manual_seed(1)
        lite0 = tmp_path / "lite0.pth"
        torch.save(_package_state(EfficientNetLite0()), lite0)
        args = ["--lite0", str(lite0)]
    else:
        lite0 = _package_weights_or_skip()
        args = []
    net = save(tmp_path / "net", G_ema=imagenet_G)
    save_png(tmp_path / "t.png", to_uint8(target)[0])
    want = _topk_of(lite0, tmp_path / "t.png")
    if weights == "made" and _installed_lite0() is not None:
        # the test tells the two apart: the installed package's classifier would pick other candidates
        assert want != _topk_of(_installed_lite0(), tmp_path / "t.png")
    result = CliRunner().invoke(
        cli, ["project", "--network", str(net), "--target", str(tmp_path / "t.png"), "--steps", "3",
              "--w-avg-samples", str(W_AVG_SAMPLES), "--class", "auto", "--distance", "lite0", *args, "--no-save-video",
              "--outdir", str(tmp_path / "out"), "--device", "cpu"], catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "out" / "result.json").read_text())
    _check_recorded(info, want)
    assert f"class {info['class_idx']}" in result.output
