"Triplane U-Net: shapes over sizes and presets, gradients, attention fast path, dtypes, bad input."
import pytest
import torch

from renderdiffusion_nb.unet import Attention, TriplaneUNet, UNetConfig, timestep_embedding, unet_config


@pytest.mark.parametrize('image_size,R', [(32, 32), (32, 64), (32, 128), (16, 16)])
def test_output_shape(image_size, R):
    net = TriplaneUNet('tiny', image_size, n_features=4, triplane_res=R)
    out = net(torch.randn(3, 3, image_size, image_size), torch.tensor([0, 10, 999]))
    assert out.shape == (3, 3, 4, R, R)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = TriplaneUNet('tiny', 16, n_features=4, triplane_res=32)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 500])
    opt = torch.optim.SGD(net.parameters(), lr=1e-2)
    for _ in range(3):  # the zero-initialised layers (output, then each block's last conv) open the path one step at a time
        opt.zero_grad(); (net(x, t) - 1).pow(2).mean().backward(); opt.step()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_timestep_changes_output():
    torch.manual_seed(0)
    net = TriplaneUNet('tiny', 16, 4, 16)
    torch.nn.init.normal_(net.out[-1].weight, std=0.1)
    for m in net.modules():
        if hasattr(m, 'conv2'): torch.nn.init.normal_(m.conv2.weight, std=0.05)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad(): a, b = net(x, torch.tensor([0])), net(x, torch.tensor([900]))
    assert (a - b).abs().max() > 1e-3


def test_embedding_distinct_and_bounded():
    e = timestep_embedding(torch.arange(1000), 128)
    assert e.abs().max() <= 1 and torch.cdist(e, e).add(torch.eye(1000) * 10).min() > 1e-2
    with pytest.raises(ValueError, match='even'): timestep_embedding(torch.arange(3), 5)


@pytest.mark.parametrize('ch,head', [(32, 32), (64, 16), (16, 32)])
def test_attention_fused_matches_reference(ch, head):
    att = Attention(ch, head_channels=head, groups=8)
    torch.nn.init.normal_(att.proj.weight, std=0.2)
    x = torch.randn(2, ch, 5, 7)
    torch.testing.assert_close(att(x), att(x, fused=False), atol=1e-5, rtol=1e-5)


def test_bf16_autocast_cpu():
    net = TriplaneUNet('tiny', 16, 4, 32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = net(torch.randn(2, 3, 16, 16), torch.tensor([1, 2]))
    assert out.shape == (2, 3, 4, 32, 32) and torch.isfinite(out.float()).all()


def test_presets_sizes():
    n = lambda p, s, c, r: sum(q.numel() for q in TriplaneUNet(p, s, c, r).parameters())
    assert n('tiny', 32, 8, 32) < 500_000
    assert 1_000_000 < n('small', 64, 32, 128) < 10_000_000  # fp16 weights under 20 MB


def test_config_from_dict_roundtrip():
    from dataclasses import asdict
    c = unet_config('small')
    assert unet_config(asdict(c)) == c
    assert unet_config({**asdict(c), 'mults': [1, 2, 2, 4]}) == c


def test_bad_inputs():
    net = TriplaneUNet('tiny', 32, 4, 32)
    with pytest.raises(ValueError, match='built for 32x32 images, got 64x64'): net(torch.randn(1, 3, 64, 64), torch.zeros(1))
    with pytest.raises(ValueError, match=r'\(B, 3, \*, \*\)'): net(torch.randn(1, 1, 32, 32), torch.zeros(1))
    with pytest.raises(ValueError, match='B=1'): net(torch.randn(1, 3, 32, 32), torch.zeros(2))
    with pytest.raises(TypeError, match='floating'): net(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.zeros(1))
    with pytest.raises(ValueError, match='multiple of 2'): TriplaneUNet('small', 36, 4, 36)
    with pytest.raises(ValueError, match='power of two'): TriplaneUNet('tiny', 32, 4, 16)
    with pytest.raises(ValueError, match='unknown U-Net preset'): TriplaneUNet('medium', 32, 4, 32)
    with pytest.raises(ValueError, match='dropout'): UNetConfig(dropout=1.5)
