"""`tr_sweep` on an untrained tiny model: its rows, its scores' definitions, and a bad argument."""
import math

import pytest
import torch

from renderdiffusion_nb.model import RenderDiffusion
from renderdiffusion_nb.reconstruct import OOD_VARIANTS, tr_sweep


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return RenderDiffusion('tiny').eval()


def test_tr_sweep_rows(tiny):
    variants = {k: OOD_VARIANTS[k] for k in ('as trained', 'new floor colour')}
    rows = tr_sweep(tiny, 'clevr1', t_rs=(0, 10), n_scenes=2, variants=variants)
    assert [(r['variant'], r['t_r']) for r in rows] == [(v, t) for v in variants for t in (0, 10)]
    for r in rows:
        assert set(r) == {'variant', 't_r', 'input_psnr', 'novel_psnr', 'novel_id_psnr', 'novel_depth_mae'}
        assert all(math.isfinite(r[k]) for k in r if k != 'variant') and r['novel_depth_mae'] >= 0
    by = {(r['variant'], r['t_r']): r for r in rows}
    # as trained, the variant's truth is the training-style truth; with a new floor colour it is not
    assert by[('as trained', 0)]['novel_psnr'] == pytest.approx(by[('as trained', 0)]['novel_id_psnr'], abs=1e-9)
    assert by[('new floor colour', 0)]['novel_psnr'] != pytest.approx(by[('new floor colour', 0)]['novel_id_psnr'], abs=1e-3)


def test_tr_sweep_same_noise_is_reproducible(tiny):
    a = tr_sweep(tiny, 'clevr1', t_rs=(10,), n_scenes=1, variants={'as trained': {}}, seed=3)
    b = tr_sweep(tiny, 'clevr1', t_rs=(10,), n_scenes=1, variants={'as trained': {}}, seed=3)
    assert a == b


def test_tr_sweep_bad_count(tiny):
    with pytest.raises(ValueError, match='n_scenes'): tr_sweep(tiny, 'clevr1', n_scenes=0)
