"Training: overfitting a fixed batch, SIGKILL and exact resume, DDP under torchrun (gloo), numerical failures, bad input."
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset

from renderdiffusion_nb.cameras import Cameras
from renderdiffusion_nb.model import load_checkpoint, model_config
from renderdiffusion_nb.train import Trainer, checkpoints, collate, run_config, train, train_config, x0_loss
from renderdiffusion_nb.data import SceneDataset, make_dataset

HERE = Path(__file__).parent
MICRO = model_config('tiny', image_size=16, triplane_res=16, n_coarse=4, n_fine=4)  # the smallest honest model: seconds per run


class Slow(Dataset):
    "A data set whose items take `delay` seconds to load (so a run can be killed between its checkpoints)."
    def __init__(self, ds, delay=0.0): self.ds, self.delay = ds, delay
    def __len__(self): return len(self.ds)
    def __getitem__(self, i): time.sleep(self.delay); return self.ds[i]


@pytest.fixture(scope='module')
def data16(tmp_path_factory):
    "Six procedural chairs at 16x16, one view each: a monocular data folder."
    return make_dataset('chairs', 'train', n=6, res=16, out=tmp_path_factory.mktemp('data') / 'chairs-16', progress=False)


def micro_config(out, data='', **kw):
    return train_config('tiny', **{'model': MICRO, 'data': str(data), 'out': str(out), 'batch_size': 2, 'log_every': 1,
                                   'grid_every': 0, 'progress': False, **kw})


def test_overfits_fixed_batch(tmp_path):
    "A tiny model drives the x0 loss on four fixed 32x32 images (four scenes) down 10x (t < 100, 4+4 samples per ray: ~75 steps)."
    # Noise levels t < 100: at high t the input hardly says which of the four scenes it shows, so no model can fit there.
    torch.manual_seed(0)
    ds = SceneDataset(make_dataset('chairs', 'train', n=4, res=32, out=tmp_path / 'd', progress=False))
    x0, K, c2w = collate([ds[i] for i in range(4)])
    cams = Cameras(K, c2w, 32, 32)
    from renderdiffusion_nb.model import RenderDiffusion
    model = RenderDiffusion(model_config('tiny', n_coarse=4, n_fine=4))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(200):
        t, noise = torch.randint(0, 100, (4,), generator=g), torch.randn(4, 3, 32, 32, generator=g)
        loss, _ = x0_loss(model, x0, cams, t, noise, jitter=True, generator=g)
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
        losses.append(loss.item())
        if step >= 20 and sum(losses[-5:]) / 5 < losses[0] / 10: break
    assert sum(losses[-5:]) / 5 < losses[0] / 10, (losses[0], losses[-5:], len(losses))


SCRIPT = textwrap.dedent('''
    import sys
    sys.path.insert(0, {here!r})
    from test_train import Slow, micro_config
    from renderdiffusion_nb.train import open_dataset, train
    out, data, steps, resume, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == '1', float(sys.argv[5])
    cfg = micro_config(out, data, steps=steps, ckpt_every=2, resume=resume, device='cpu')
    train(cfg, Slow(open_dataset(data, cfg.model), delay))
''')


def _run(script, *args, **kw):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def _tensors(ckpt):
    return load_file(str(ckpt))


def test_sigkill_and_resume_matches_uninterrupted(tmp_path, data16):
    "Bit-exact resume, checked on the CPU: on a GPU the Triton renderer's backward adds plane gradients with atomics in no fixed order, so two runs differ in the last bits (2e-6 after 7 steps on an H100)."
    script = tmp_path / 'run.py'; script.write_text(SCRIPT.format(here=str(HERE)))
    p = _run(script, tmp_path / 'a', data16, 7, 0, 0.0); out = p.communicate(timeout=300)[0].decode()
    assert p.returncode == 0, out
    b = tmp_path / 'b'
    p = _run(script, b, data16, 7, 0, 0.3)  # slow data (0.6 s a step): the run is killed between its checkpoints
    deadline = time.time() + 240
    while not (b / 'checkpoints' / 'step_0000004.safetensors').exists():
        assert p.poll() is None and time.time() < deadline, p.communicate()[0].decode()
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    done = sorted(x.name for x in (b / 'checkpoints').glob('step_*.safetensors'))
    assert 'step_0000006.safetensors' not in done and 'step_0000007.safetensors' not in done, done
    for f in (b / 'checkpoints').glob('step_*.safetensors'): load_checkpoint(f, config=MICRO)  # none corrupt
    p = _run(script, b, data16, 7, 1, 0.0); out = p.communicate(timeout=300)[0].decode()
    assert p.returncode == 0, out
    last = load_checkpoint(b / 'checkpoints' / 'step_0000007.safetensors', config=MICRO)
    assert last.state['step'] == 7
    steps = [json.loads(l)['step'] for l in (b / 'log.jsonl').read_text().splitlines()]
    assert steps == list(range(1, 8)), steps
    ta, tb = _tensors(tmp_path / 'a' / 'checkpoints' / 'step_0000007.safetensors'), _tensors(b / 'checkpoints' / 'step_0000007.safetensors')
    assert ta.keys() == tb.keys() and any(k.startswith('optim/') for k in ta) and any(k.startswith('ema/') for k in ta)
    diff = {k: (ta[k].float() - tb[k].float()).abs().max().item() for k in ta}
    assert max(diff.values()) == 0, {k: v for k, v in diff.items() if v}


DDP_SCRIPT = textwrap.dedent('''
    import os, sys
    sys.path.insert(0, {here!r})
    from safetensors.torch import save_file
    from test_train import micro_config
    from renderdiffusion_nb.train import Trainer
    tr = Trainer(micro_config(sys.argv[1], sys.argv[2], steps=1, batch_size=4, jitter=False, device=sys.argv[3], precision='fp32'))
    tr.fit()
    save_file({{k: v.contiguous() for k, v in tr.model.state_dict().items()}}, os.path.join(sys.argv[1], f"rank{{os.environ['RANK']}}.safetensors"))
''')


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(torch.cuda.device_count() < 2, reason='NCCL needs 2 GPUs'))])
def test_ddp_two_ranks_equal_single_process(tmp_path, data16, device):
    "Two ranks (gloo on CPU, NCCL on two GPUs) end one step with identical parameters, equal to one process on the whole batch."
    script = tmp_path / 'ddp.py'; script.write_text(DDP_SCRIPT.format(here=str(HERE)))
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'NCCL_NVLS_ENABLE': '0', 'TORCH_SYMM_MEM_DISABLE_MULTICAST': '1', 'NVSHMEM_DISABLE_NVLS': '1'}
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(script), str(tmp_path / 'ddp'), str(data16), device],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r0, r1 = load_file(str(tmp_path / 'ddp' / 'rank0.safetensors')), load_file(str(tmp_path / 'ddp' / 'rank1.safetensors'))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    single = Trainer(micro_config(tmp_path / 'single', data16, steps=1, batch_size=4, jitter=False, device=device, precision='fp32'))
    init = {k: v.clone() for k, v in single.model.state_dict().items()}
    single.fit()
    moved = [k for k, v in single.model.state_dict().items() if not torch.equal(v, init[k])]
    assert len(moved) >= 4, moved
    lr = single.config.lr
    if device == 'cpu':
        for k, v in single.model.state_dict().items(): torch.testing.assert_close(r0[k], v, atol=1e-6, rtol=1e-5, msg=k)
    else: # the GPU renderer's backward sums with atomics: a gradient entry near zero can change sign, and Adam's first step is +-lr for it
        d = torch.cat([(r0[k].float() - v.float().cpu()).abs().flatten() for k, v in single.model.state_dict().items()])
        assert d.max() <= 2.01 * lr and (d > 1e-5).float().mean() < 1e-3, (d.max().item(), (d > 1e-5).float().mean().item())


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data16, monkeypatch):
    train(micro_config(tmp_path / 'r', data16, steps=2, ckpt_every=2))
    import renderdiffusion_nb.train as tr
    real, calls = tr.x0_loss, []
    def diverging(*a, **kw):
        loss, out = real(*a, **kw)
        calls.append(1)
        return (loss * float('inf') if len(calls) == 2 else loss), out
    monkeypatch.setattr(tr, 'x0_loss', diverging)
    with pytest.raises(FloatingPointError, match=r'(?s)step 3: the loss is not finite.*last good checkpoint is .*step_0000002\.safetensors \(step 2\)'):
        train(micro_config(tmp_path / 'r', data16, steps=6, ckpt_every=4, resume=True))
    assert sorted(p.name for p in (tmp_path / 'r' / 'checkpoints').iterdir()) == ['step_0000002.safetensors']
    assert load_checkpoint(tmp_path / 'r' / 'checkpoints' / 'step_0000002.safetensors').state['step'] == 2


def test_nan_data_stops_with_a_message(tmp_path, data16):
    ds = SceneDataset(data16)
    ds.image = ds.image.float() * float('nan')
    with pytest.raises(FloatingPointError, match=r'(?s)step 0: the loss is not finite.*NaN.*no checkpoint was written yet'):
        train(micro_config(tmp_path / 'r', steps=2), ds)


def test_run_folder_never_overwritten(tmp_path, data16):
    train(micro_config(tmp_path / 'r', data16, steps=1))
    before = (tmp_path / 'r' / 'checkpoints' / 'step_0000001.safetensors').read_bytes()
    with pytest.raises(FileExistsError, match='exists and is not empty; resume it'):
        train(micro_config(tmp_path / 'r', data16, steps=1))
    assert (tmp_path / 'r' / 'checkpoints' / 'step_0000001.safetensors').read_bytes() == before


def test_wrong_image_size_for_config(tmp_path):
    data32 = make_dataset('chairs', 'train', n=2, res=32, out=tmp_path / 'chairs-32', progress=False)
    with pytest.raises(ValueError, match="images are 32x32 but the model config is for 16x16"):
        train(micro_config(tmp_path / 'r', data32, steps=1))
    assert not (tmp_path / 'r').exists()


def test_resume_with_other_config_refused(tmp_path, data16):
    train(micro_config(tmp_path / 'r', data16, steps=1))
    with pytest.raises(ValueError, match=r'(?s)different configuration.*lr: 0.001 -> 0.01'):
        train(micro_config(tmp_path / 'r', data16, steps=2, lr=1e-2, resume=True))
    with pytest.raises(ValueError, match=r"(?s)different configuration.*'n_features': 8.*'n_features': 4"):
        train(micro_config(tmp_path / 'r', data16, steps=2, resume=True, model=model_config(MICRO, n_features=4)))
    ck = tmp_path / 'r' / 'checkpoints' / 'step_0000001.safetensors'
    with pytest.raises(ValueError, match='n_features: 8 vs 4'):
        load_checkpoint(ck, config=model_config(MICRO, n_features=4))


def test_resume_continues_and_run_config(tmp_path, data16):
    train(micro_config(tmp_path / 'r', data16, steps=2, ckpt_every=1))
    cfg = run_config(tmp_path / 'r', steps=3)
    assert cfg.resume and cfg.steps == 3 and cfg.model == MICRO
    ck = train(cfg)
    assert ck.name == 'step_0000003.safetensors' and load_checkpoint(ck).state['step'] == 3
    assert len(checkpoints(tmp_path / 'r')) == 3
    with pytest.raises(ValueError, match='cannot change when resuming'):
        run_config(tmp_path / 'r', lr=1.0)


def test_grid_and_log_written(tmp_path, data16):
    train(micro_config(tmp_path / 'r', data16, steps=2, grid_every=2, log_every=1))
    grid = tmp_path / 'r' / 'grids' / 'step_0000002.png'
    assert grid.is_file() and grid.stat().st_size > 1000
    recs = [json.loads(l) for l in (tmp_path / 'r' / 'log.jsonl').read_text().splitlines()]
    assert [r['step'] for r in recs] == [1, 2] and all(r['images_per_s'] > 0 and r['loss'] > 0 for r in recs)


def test_resume_refuses_a_folder_that_is_not_a_run(tmp_path, data16):
    (tmp_path / 'r').mkdir(); (tmp_path / 'r' / 'notes.txt').write_text('mine')
    with pytest.raises(FileNotFoundError, match='not a run folder'):
        train(micro_config(tmp_path / 'r', data16, steps=1, resume=True))
    assert sorted(p.name for p in (tmp_path / 'r').iterdir()) == ['notes.txt']


def test_t_max_draws(tmp_path, data16):
    tr = Trainer(micro_config(tmp_path / 'r', data16, t_max=0, batch_size=4))
    assert (tr._step_draws(3, 16, 16)[0] == 0).all()
    tr.config = micro_config(tmp_path / 'r', data16, t_max=10, batch_size=4)
    assert all((tr._step_draws(s, 16, 16)[0] <= 10).all() for s in range(20))
    with pytest.raises(ValueError, match='t_max must be None or in'): micro_config(tmp_path, t_max=1000)


def test_missing_data_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='does-not-exist.*does not exist'):
        train(micro_config(tmp_path / 'r', tmp_path / 'does-not-exist', steps=1))


def test_empty_data_setting_is_named():
    from renderdiffusion_nb.train import open_dataset
    with pytest.raises(ValueError, match='TrainConfig.data is empty'): open_dataset('')


def test_ema_copies_integer_buffers():
    from renderdiffusion_nb.train import EMA
    m = torch.nn.BatchNorm1d(2)
    ema = EMA(m, decay=0.9)
    m(torch.randn(8, 2)); m(torch.randn(8, 2))
    ema.update(m, step=100)
    assert ema.shadow['num_batches_tracked'].dtype == torch.long and int(ema.shadow['num_batches_tracked']) == 2


def test_init_from_checkpoint(tmp_path, data16):
    "init= starts a fresh run (step 0, new optimizer) from another run's EMA weights; a checkpoint of another config is refused."
    first = Trainer(micro_config(tmp_path / 'a', data16, steps=2))
    ck = first.fit()
    ema = load_checkpoint(ck).ema
    tr = Trainer(micro_config(tmp_path / 'b', data16, steps=2, init=str(ck)))
    assert tr.step == 0 and not tr.opt.state
    for k, v in tr.model.state_dict().items(): assert torch.equal(v, ema[k].to(v.device)), k
    assert any(not torch.equal(v.to(first.device), first.model.state_dict()[k]) for k, v in ema.items() if v.is_floating_point())
    with pytest.raises(ValueError, match='another config'): Trainer(micro_config(tmp_path / 'c', data16, init=str(ck), model=model_config(MICRO, decoder_hidden=16)))


class NanAfter(Dataset):
    "A data set whose images turn NaN after its first `n` reads (a fault planted in the middle of a run)."
    def __init__(self, ds, n): self.ds, self.n, self.reads = ds, n, 0
    def __len__(self): return len(self.ds)
    def __getitem__(self, i):
        self.reads += 1
        item = dict(self.ds[i])
        if self.reads > self.n: item['image'] = item['image'] * float('nan')
        return item


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA'))])
def test_nan_mid_run_stops_at_the_next_check(tmp_path, data16, device):
    "NaN data from step 5 on: the step reads nothing back, so the run stops at the next check (the checkpoint at step 6, before the log at 8), naming step 5 and the step-3 checkpoint."
    tr = Trainer(micro_config(tmp_path / 'r', data16, steps=20, log_every=4, ckpt_every=3, device=device), NanAfter(SceneDataset(data16), 0))
    tr.dataset.reads, tr.dataset.n = 0, 5 * 2  # five good steps of two images
    with pytest.raises(FloatingPointError, match=r'(?s)step 5: the loss is not finite.*last good checkpoint is .*step_0000003\.safetensors \(step 3\)'):
        tr.fit()
    assert tr.step == 6 and sorted(p.name for p in (tmp_path / 'r' / 'checkpoints').iterdir()) == ['step_0000003.safetensors']


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='CUDA graphs need a GPU')


@cuda
def test_captured_steps_match_eager_and_never_wait(tmp_path):
    "Five steps replayed from a CUDA graph give the eager run's losses and weights (same draws; the renderer's atomics add rounding), and a replayed step never synchronises with the host."
    runs = {}
    for mode in ('eager', 'captured'):
        tr = Trainer(micro_config(tmp_path / mode, 'procedural:chairs', steps=5, device='cuda', eager=mode == 'eager'))
        losses = []
        for i, batch in enumerate(tr._batches()):
            if mode == 'captured' and i == 1: torch.cuda.set_sync_debug_mode('error')  # after the recording step
            try: losses.append(tr.train_step(*batch)['loss'].clone())
            finally: torch.cuda.set_sync_debug_mode('default')
        runs[mode] = torch.stack(losses).cpu(), torch.cat([p.detach().flatten() for p in tr.model.parameters()]).cpu(), tr
    (le, we, e), (lc, wc, c) = runs['eager'], runs['captured']
    assert e.graph is None and c.graph is not None
    torch.testing.assert_close(lc, le, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(wc, we, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(c.ema.shadow['decoder.fc2.weight'], e.ema.shadow['decoder.fc2.weight'], rtol=1e-3, atol=1e-4)
    assert not torch.equal(we, torch.cat([p.detach().flatten().cpu() for p in Trainer(
        micro_config(tmp_path / 'fresh', 'procedural:chairs', device='cuda')).model.parameters()]))  # the steps did train


@cuda
def test_captured_run_checkpoints_and_resumes(tmp_path):
    "A captured run saves (learning rate and step counters as numbers in the file) and a resumed captured run continues from it."
    train(micro_config(tmp_path / 'r', 'procedural:chairs', steps=4, ckpt_every=2, device='cuda'))
    ck = load_checkpoint(tmp_path / 'r' / 'checkpoints' / 'step_0000004.safetensors')
    assert ck.state['step'] == 4 and isinstance(ck.optimizer['param_groups'][0]['lr'], float)
    tr = Trainer(run_config(tmp_path / 'r', steps=6))
    assert tr.step == 4 and tr.opt.param_groups[0]['capturable'] and tr.opt.param_groups[0]['lr'].is_cuda
    tr.fit()
    assert tr.graph is not None and load_checkpoint(tr.last_ckpt).state['step'] == 6


def test_overfit_check_fails_with_the_old_decoder_start():
    "Four clevr1 scenes fitted at t = 0 come back with their PSNR and colours with the decoder's start, and without them when its last layer starts 100x smaller (seed 1; the page shows seed 0)."
    from renderdiffusion_nb.train import overfit_check
    from renderdiffusion_nb.model import RenderDiffusion
    fits = {}
    for start in ('standard', 'old'):
        torch.manual_seed(1)
        m = RenderDiffusion(model_config('tiny', image_size=24, triplane_res=24, n_coarse=8, n_fine=8))
        if start == 'old':
            with torch.no_grad(): m.decoder.fc2.weight.mul_(0.01); m.decoder.fc2.bias.zero_()
        fits[start] = overfit_check(m, seed=1)
    ok = {k: (f['psnr'] > 22.8, f['chroma'] > 2 / 3 * f['chroma_true']) for k, f in fits.items()}
    assert ok == {'standard': (True, True), 'old': (False, False)}, {k: (f['psnr'], f['chroma'], f['chroma_true']) for k, f in fits.items()}
