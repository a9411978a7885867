"RenderDiffusion model and checkpoints: shapes, camera handling, precision, round trips, mismatches, corrupt files, no unpickling."
import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from renderdiffusion_nb.cameras import rotate_cameras, sample_cameras
from renderdiffusion_nb.model import (Checkpoint, ModelConfig, RenderDiffusion, export_weights, load_checkpoint, load_model, model_config,
                                      save_checkpoint)

MICRO = model_config('tiny', image_size=16, triplane_res=16, n_coarse=4, n_fine=4)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 16, 16, generator=g) * 2 - 1, torch.tensor([3, 700]), sample_cameras(2, 16, 16, generator=g)


def _opened(model):
    "Give the zero-initialised output layer weights so the triplane depends on the input."
    torch.nn.init.normal_(model.encoder.out[-1].weight, std=0.05)
    return model


def test_forward_shapes_and_ranges(batch):
    x, t, cams = batch
    out = RenderDiffusion(MICRO)(x, t, cams)
    assert out['x0_hat'].shape == (2, 3, 16, 16) and out['planes'].shape == (2, 3, 8, 16, 16)
    assert out['depth'].shape == out['opacity'].shape == (2, 1, 16, 16)
    assert -1 <= out['x0_hat'].min() and out['x0_hat'].max() <= 1 and 0 <= out['opacity'].min() and out['opacity'].max() <= 1


def test_encoder_does_not_see_the_camera_renderer_does(batch):
    x, t, cams = batch
    torch.manual_seed(0)
    m = _opened(RenderDiffusion(MICRO))
    a, b = m(x, t, cams), m(x, t, rotate_cameras(cams, 60))
    assert torch.equal(a['planes'], b['planes'])
    assert (a['x0_hat'] - b['x0_hat']).abs().max() > 1e-4


def test_render_novel_view_any_size(batch):
    x, t, cams = batch
    m = RenderDiffusion(MICRO)
    planes = m.encode(x, t)
    big = sample_cameras(2, 24, 20, generator=torch.Generator().manual_seed(1))
    out = m.render(planes, big, chunk=100)
    assert out['rgb'].shape == (2, 3, 24, 20)
    torch.testing.assert_close(out['rgb'], m.render(planes, big)['rgb'])


def test_bf16_autocast_renders_in_fp32(batch):
    x, t, cams = batch
    m = RenderDiffusion(MICRO)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = m(x, t, cams)
    assert out['planes'].dtype == torch.bfloat16 and out['x0_hat'].dtype == torch.float32


def test_gradients_reach_encoder_and_decoder(batch):
    x, t, cams = batch
    m = _opened(RenderDiffusion(MICRO))
    m(x, t, cams)['x0_hat'].square().mean().backward()
    assert m.encoder.out[-1].weight.grad.abs().sum() > 0 and m.decoder.fc1.weight.grad.abs().sum() > 0


def test_bad_inputs(batch):
    x, t, cams = batch
    m = RenderDiffusion(MICRO)
    with pytest.raises(ValueError, match='config is for 16x16 images, got 32x32'): m(torch.zeros(2, 3, 32, 32), t, sample_cameras(2, 32, 32))
    with pytest.raises(ValueError, match='cameras are for 32x32 images but x_t is 16x16'): m(x, t, sample_cameras(2, 32, 32))
    with pytest.raises(ValueError, match=r'\[0, 999\]'): m(x, torch.tensor([0, 1000]), cams)
    with pytest.raises(ValueError, match='integer timesteps'): m(x, t.float(), cams)
    with pytest.raises(TypeError, match='Cameras'): m(x, t, cams.K)
    with pytest.raises(ValueError, match='unknown model preset'): RenderDiffusion('huge')
    with pytest.raises(ValueError, match='unknown ModelConfig fields'): ModelConfig.from_dict({**MICRO.to_dict(), 'colour': 1})
    with pytest.raises(ValueError, match="schedule must be"): model_config('tiny', schedule='sigmoid')


def _trained(batch, steps=2):
    x, t, cams = batch
    torch.manual_seed(0)
    m = RenderDiffusion(MICRO)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad(); (m(x, t, cams)['x0_hat'] - x).square().mean().backward(); opt.step()
    return m, opt


def test_roundtrip_exact_and_optimizer_continues(tmp_path, batch):
    x, t, cams = batch
    m, opt = _trained(batch)
    ema = {k: v.detach().clone() * 0.5 for k, v in m.state_dict().items()}
    p = save_checkpoint(tmp_path / 'c.safetensors', m, ema=ema, optimizer=opt,
                        state={'step': 2, 'note': 'x', 'rng': torch.Generator().manual_seed(3).get_state()})
    ck = load_checkpoint(p, config=MICRO)
    assert isinstance(ck, Checkpoint) and ck.config == MICRO and ck.state['step'] == 2 and ck.state['note'] == 'x'
    g = torch.Generator(); g.set_state(ck.state['rng'])
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=torch.Generator().manual_seed(3)))
    assert all(torch.equal(ck.model[k], v) for k, v in m.state_dict().items())
    assert all(torch.equal(ck.ema[k], v) for k, v in ema.items())
    m2 = RenderDiffusion(MICRO); m2.load_state_dict(ck.model)
    opt2 = torch.optim.AdamW(m2.parameters(), lr=1e-2); opt2.load_state_dict(ck.optimizer)
    for mm, oo in ((m, opt), (m2, opt2)):
        oo.zero_grad(); (mm(x, t, cams)['x0_hat'] - x).square().mean().backward(); oo.step()
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))


def test_fp16_shipping_copy(tmp_path, batch):
    m, _ = _trained(batch)
    p = save_checkpoint(tmp_path / 'half.safetensors', m, dtype=torch.float16)
    full = save_checkpoint(tmp_path / 'full.safetensors', m)
    assert p.stat().st_size < 0.6 * full.stat().st_size
    m2 = load_model(p, device='cpu')
    assert not m2.training and next(m2.parameters()).dtype == torch.float32
    for k, v in m.state_dict().items(): torch.testing.assert_close(m2.state_dict()[k], v, atol=2e-3, rtol=2e-3)
    ema_default = load_model(save_checkpoint(tmp_path / 'e.safetensors', m, ema={k: torch.zeros_like(v) for k, v in m.state_dict().items()}))
    assert all(v.abs().max() == 0 for v in ema_default.state_dict().values())


def test_export_weights(tmp_path, batch):
    m, opt = _trained(batch)
    ema = {k: v.detach() + 1 for k, v in m.state_dict().items()}
    src = save_checkpoint(tmp_path / 'train.safetensors', m, ema=ema, optimizer=opt, state={'step': 7})
    dst = export_weights(src, tmp_path / 'ship.safetensors')
    ck = load_checkpoint(dst, config=MICRO)
    assert ck.ema is None and ck.optimizer is None and ck.state == {'source': 'train.safetensors', 'step': 7, 'weights': 'ema'}
    assert all(v.dtype == torch.float16 for v in ck.model.values())
    for k, v in ema.items(): torch.testing.assert_close(ck.model[k].float(), v, atol=1e-2, rtol=1e-3)
    assert dst.stat().st_size < src.stat().st_size / 5
    with pytest.raises(FileExistsError): export_weights(src, dst)


def test_config_and_weight_mismatches_are_listed(tmp_path, batch):
    m, _ = _trained(batch)
    p = save_checkpoint(tmp_path / 'c.safetensors', m)
    with pytest.raises(ValueError, match=r'(?s)another config.*n_features: 8 vs 16.*unet.channels: 16 vs 32'):
        load_checkpoint(p, config=model_config(MICRO, n_features=16, unet={**MICRO.unet.__dict__, 'channels': 32}))
    sd = {f'model/{k}': v.contiguous() for k, v in m.state_dict().items()}
    sd.pop('model/decoder.fc2.bias'); sd['model/extra.w'] = torch.zeros(1)
    sd['model/decoder.fc1.weight'] = torch.zeros(3, 3)
    meta = {'format': 'renderdiffusion_nb.checkpoint/1', 'config': json.dumps(MICRO.to_dict()), 'state': '{}'}
    save_file(sd, str(tmp_path / 'bad.safetensors'), metadata=meta)
    with pytest.raises(ValueError, match=r'(?s)missing keys \(1\): decoder.fc2.bias.*unexpected keys \(1\): extra.w.*decoder.fc1.weight: \(3, 3\) vs \(32, 8\)'):
        load_checkpoint(tmp_path / 'bad.safetensors')
    with pytest.raises(ValueError, match='EMA weights'):
        save_checkpoint(tmp_path / 'e.safetensors', m, ema={'x': torch.zeros(1)})


def test_corrupt_foreign_and_missing_files(tmp_path, batch):
    m, _ = _trained(batch)
    p = save_checkpoint(tmp_path / 'c.safetensors', m)
    data = p.read_bytes()
    (tmp_path / 'trunc.safetensors').write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match='truncated or corrupt'): load_checkpoint(tmp_path / 'trunc.safetensors')
    (tmp_path / 'junk.safetensors').write_bytes(b'\x00' * 100)
    with pytest.raises(ValueError, match='truncated or corrupt'): load_checkpoint(tmp_path / 'junk.safetensors')
    save_file({'w': torch.zeros(2)}, str(tmp_path / 'other.safetensors'))
    with pytest.raises(ValueError, match='not a renderdiffusion_nb.checkpoint/1 checkpoint'): load_checkpoint(tmp_path / 'other.safetensors')
    with pytest.raises(FileNotFoundError, match='no checkpoint file'): load_checkpoint(tmp_path / 'none.safetensors')


def test_atomic_and_never_overwritten(tmp_path, batch, monkeypatch):
    m, _ = _trained(batch)
    p = save_checkpoint(tmp_path / 'c.safetensors', m)
    before = p.read_bytes()
    with pytest.raises(FileExistsError): save_checkpoint(p, m)
    import renderdiffusion_nb.model as mod
    def dying(tensors, path, metadata=None):
        open(path, 'wb').write(b'half a file')
        raise KeyboardInterrupt
    monkeypatch.setattr(mod, 'save_file', dying)
    with pytest.raises(KeyboardInterrupt): save_checkpoint(p, m, overwrite=True)
    assert p.read_bytes() == before and sorted(x.name for x in tmp_path.iterdir()) == ['c.safetensors']


def test_loading_never_unpickles(tmp_path, batch, monkeypatch):
    m, opt = _trained(batch)
    p = save_checkpoint(tmp_path / 'c.safetensors', m, ema=m.state_dict(), optimizer=opt, state={'step': 1})
    def refuse(*a, **k): raise AssertionError('unpickling was attempted')
    for target in ((torch, 'load'), (pickle, 'load'), (pickle, 'loads'), (pickle, 'Unpickler')):
        monkeypatch.setattr(*target, refuse)
    ck = load_checkpoint(p, config=MICRO)
    assert ck.optimizer is not None and load_model(p, device='cpu') is not None
