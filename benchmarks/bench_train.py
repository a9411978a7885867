"""Training throughput (images/s) of the RenderDiffusion denoiser: the eager step against the captured one (a CUDA graph).

For each model config and batch size, builds a `Trainer` on fresh procedural scenes (`data='procedural:chairs'`,
rendered on the device; bf16 autocast on CUDA, Triton renderer, jittered samples, fused AdamW, EMA, gradient
clipping: exactly the step of `renderdiffusion_nb.train`), runs `--warmup` steps (the captured step records its
graph in the first), then times `--steps` steps with the batch already on the device, so this is the step's
throughput, not the data's. It also counts the host-device synchronisations of a step (PyTorch's sync debug mode)
and the peak GPU memory. Prints a markdown table. Usage:

    python benchmarks/bench_train.py                                   # small at batch 32 and 128, base at 128
    python benchmarks/bench_train.py --runs small:32 --steps 50 --json out.json
    python benchmarks/bench_train.py --curves 200 --json curves.json   # eager and captured loss curves, same seeds
    python benchmarks/bench_train.py --device cpu --runs tiny:4 --steps 3 --warmup 1 --modes eager
"""
from __future__ import annotations
import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from renderdiffusion_nb.core import get_device
from renderdiffusion_nb.train import Trainer, train_config


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


def trainer(preset, batch, mode, dev, out, **kw):
    cfg = train_config(preset, data='procedural:chairs', out=str(out), batch_size=batch, device=str(dev), eager=mode == 'eager',
                       compile=mode == 'compiled',
                       num_workers=0, grid_every=0, progress=False, **kw)
    return Trainer(cfg)


def count_syncs(tr, batch, steps):
    "Host-device synchronisations per step, as PyTorch's sync debug mode reports them (CUDA only)."
    if tr.device.type != 'cuda': return float('nan')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try:
            for _ in range(steps): tr.train_step(*batch)
        finally: torch.cuda.set_sync_debug_mode('default')
    # One warning per synchronizing operation; PyTorch's one-time notice that the debug mode is a prototype
    # ("Synchronization debug mode is a prototype feature ...") is not a synchronization and is not counted.
    return sum('called a synchronizing CUDA operation' in str(w.message) for w in caught) / steps


def time_run(preset, batch_size, mode, steps, warmup, dev, root):
    "Images/s, ms/step, syncs/step and peak MiB of one config, batch size and mode."
    tr = trainer(preset, batch_size, mode, dev, root / f'{preset}-{batch_size}-{mode}')
    batch = next(iter(tr._batches()))
    for _ in range(warmup): tr.train_step(*batch)
    syncs = count_syncs(tr, batch, 3)
    if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats(dev)
    sync(dev); t0 = time.perf_counter()
    for _ in range(steps): tr.train_step(*batch)
    sync(dev); dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == 'cuda' else float('nan')
    n_params = sum(p.numel() for p in tr.model.parameters())
    row = dict(config=preset, batch=batch_size, mode=mode, captured=tr.graph is not None, params_M=n_params / 1e6,
               images_per_s=steps * batch_size / dt, ms_per_step=1e3 * dt / steps, syncs_per_step=syncs, peak_MiB=peak)
    del tr, batch
    if dev.type == 'cuda': torch.cuda.empty_cache()
    return row


def curves(preset, batch_size, steps, dev, root):
    "The per-step loss of an eager and a captured run with the same seed and the same fresh scenes."
    out = {}
    for mode in ('eager', 'captured'):
        tr = trainer(preset, batch_size, mode, dev, root / f'curve-{mode}', steps=steps)
        losses = []
        for batch in tr._batches(): losses.append(float(tr.train_step(*batch)['loss']))
        out[mode] = losses
        del tr
    return dict(config=preset, batch=batch_size, steps=steps, **out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--runs', nargs='+', default=['small:32', 'small:128', 'base:128'], help='preset:batch pairs to time')
    p.add_argument('--modes', nargs='+', default=['eager', 'captured'], choices=['eager', 'captured', 'compiled'],
                   help="'compiled': captured, with the U-Net compiled by torch.compile")
    p.add_argument('--steps', type=int, default=30, help='timed steps')
    p.add_argument('--warmup', type=int, default=5, help='untimed steps first (compilation, capture, allocator)')
    p.add_argument('--curves', type=int, default=0, help='instead of timing: this many steps of eager and captured, losses compared')
    p.add_argument('--device', default=None, help="'cpu' or 'cuda' (default: CUDA when available)")
    p.add_argument('--json', default=None, help='also write the results to this JSON file')
    a = p.parse_args(argv)
    dev = get_device(a.device)
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else platform.processor() or 'CPU'
    head = f"{name}, torch {torch.__version__}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    with tempfile.TemporaryDirectory() as d:
        if a.curves:
            preset, batch = a.runs[0].split(':')
            res = curves(preset, int(batch), a.curves, dev, Path(d))
            e, c = torch.tensor(res['eager']), torch.tensor(res['captured'])
            res.update(device=head, max_abs_diff=(e - c).abs().max().item(), first_step_diff=(e[0] - c[0]).abs().item())
            print(f"\nLoss curves, {preset} batch {batch}, {a.curves} steps, {head}: max |eager - captured| = {res['max_abs_diff']:.3g}, "
                  f"at step 0 {res['first_step_diff']:.3g}; mean of the last 20: eager {e[-20:].mean():.4f}, captured {c[-20:].mean():.4f}")
            if a.json: Path(a.json).write_text(json.dumps(res))
            return
        rows = []
        for run in a.runs:
            preset, batch = run.split(':')
            for mode in a.modes:
                try: rows.append(time_run(preset, int(batch), mode, a.steps, a.warmup, dev, Path(d)))
                except (RuntimeError, ImportError) as e:
                    rows.append(dict(config=preset, batch=int(batch), mode=mode, error=str(e).split('\n')[0][:200]))
                    if dev.type == 'cuda': torch.cuda.empty_cache()
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"\nTraining step, {head}; bf16 autocast on CUDA; {a.steps} timed steps after {a.warmup} warm-up steps\n")
    print('| config | batch | mode | images/s | ms/step | syncs/step | peak MiB | speed-up vs eager |')
    print('| --- | --- | --- | --- | --- | --- | --- | --- |')
    eager = {(r['config'], r['batch']): r['images_per_s'] for r in rows if r.get('mode') == 'eager' and 'images_per_s' in r}
    for r in rows:
        if 'error' in r:
            print(f"| {r['config']} | {r['batch']} | {r['mode']} | failed: {r['error']} | | | | |"); continue
        sp = eager.get((r['config'], r['batch']))
        sp = f"{r['images_per_s'] / sp:.2f}x" if sp else ''
        mode = r['mode'] + ('' if r['mode'] == 'eager' or r['captured'] else ' (fell back to eager)')
        print(f"| {r['config']} | {r['batch']} | {mode} | {r['images_per_s']:.0f} | {r['ms_per_step']:.1f} | {r['syncs_per_step']:.1f} | "
              f"{r['peak_MiB']:.0f} | {sp} |")
    if a.json: Path(a.json).write_text(json.dumps(dict(device=head, rows=rows), indent=1))


if __name__ == '__main__':
    main()
