"The quality study's arms, run tiny on the CPU: the two-view upper bound, the camera-input arm and the argument parsing."
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def study():
    spec = importlib.util.spec_from_file_location('study', ROOT / 'benchmarks' / 'study.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_arms_parse_and_bad_arms_are_refused(study):
    train, model, flags = study.parse_arm('two_view,t_power=2,lr=5e-4,model.unet=base')
    assert train == {'t_power': 2, 'lr': 5e-4} and model == {'unet': 'base'} and flags == {'two_view'}
    with pytest.raises(SystemExit, match='field=value'): study.parse_arm('twoview')


def test_two_view_batches_hold_two_views_of_each_scene(study):
    x0, K, c2w = next(study.two_view_batches('clevr1', 2, 1, 16, 'cpu'))
    assert x0.shape == (2, 6, 16, 16) and K.shape == (2, 2, 3, 3) and c2w.shape == (2, 2, 4, 4)
    assert not torch.allclose(c2w[:, 0], c2w[:, 1]) and not torch.allclose(x0[:, :3], x0[:, 3:])


def test_camera_input_starts_as_the_plain_model_and_sees_the_rays(study):
    from renderdiffusion_nb.model import RenderDiffusion, model_config
    torch.manual_seed(0)
    m = RenderDiffusion(model_config('tiny'))
    img, cams, _ = study.held_out('clevr1', 2, m.config.image_size, 'cpu')
    x, t, c = img[:, 0], torch.zeros(2, dtype=torch.long), cams[torch.arange(2) * 4]
    plain = m(x, t, c)['x0_hat']
    study.with_camera_input(m)
    assert torch.equal(m(x, t, c)['x0_hat'], plain) # the rays' convolution starts at zero
    torch.nn.init.normal_(m.encoder.out[-1].weight, std=0.02) # once the output layer has moved, the rays get gradients
    m(x, t, c)['x0_hat'].square().mean().backward()
    assert m.encoder.stem.cam.weight.grad.abs().sum() > 0
    rays = study.plucker(c)
    assert rays.shape == (2, 6, 32, 32) and torch.allclose(rays[:, :3].norm(dim=1), torch.ones(2, 32, 32), atol=1e-5)


def test_two_view_and_camera_arms_train_and_score(study, tmp_path, monkeypatch):
    out = tmp_path / 'study.json'
    monkeypatch.setattr(sys, 'argv', ['study.py'])
    study.main(['--preset', 'tiny', '--arms', 'two_view,lr=1e-3', 'camera_input,lr=1e-3', '--images', '16', '--batch-size', '8',
                '--scenes', '2', '--eval-every', '16', '--device', 'cpu', '--json', str(out)])
    rows = json.loads(out.read_text())['arms']
    assert [r['arm'] for r in rows] == ['two_view,lr=1e-3', 'camera_input,lr=1e-3']
    for r in rows:
        c = r['curve'][-1]
        assert c['images'] == 16 and all(v == v and v > 0 for v in (c['loss'], c['input_psnr'], c['novel_psnr']))
