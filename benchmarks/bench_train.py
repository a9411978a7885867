"""Training throughput (images/s) of the RenderDiffusion denoiser, with the PyTorch and the Triton renderer side by side.

For each model config and renderer backend, builds a `Trainer` (bf16 autocast on CUDA, jittered samples, AdamW,
EMA, gradient clipping: exactly the training step of `renderdiffusion_nb.train`) on a procedural data set of the
config's image size, runs `--warmup` steps, then times `--steps` steps (data already on the device, so this is the
model's throughput, not the loader's). Prints a markdown table: images/s per backend, the Triton speed-up, peak
GPU memory and the time split between the U-Net and the renderer. Usage:

    python benchmarks/bench_train.py                                  # small and base, batch 32, torch and triton
    python benchmarks/bench_train.py --configs small --batch-size 64 --steps 30
    python benchmarks/bench_train.py --device cpu --configs tiny --batch-size 4 --steps 3 --warmup 1 --backends torch
"""
from __future__ import annotations
import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from renderdiffusion_nb.core import get_device
from renderdiffusion_nb.data import make_dataset
from renderdiffusion_nb.train import Trainer, collate, train_config


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


def time_config(preset, backend, batch_size, steps, warmup, dev, data_root):
    "Images/s, peak MiB and the U-Net's share of a step, for one config and renderer backend."
    cfg0 = train_config(preset)
    res = cfg0.model.image_size
    data = make_dataset('chairs', 'train', n=max(batch_size, 64), res=res, out=data_root / f'chairs-{res}', progress=False, device=dev)
    with tempfile.TemporaryDirectory() as out:
        cfg = train_config(preset, data=str(data), out=str(Path(out) / 'run'), batch_size=batch_size, backend=backend,
                           device=str(dev), num_workers=0, grid_every=0, progress=False)
        tr = Trainer(cfg)
        x0, K, c2w = (v.to(dev) for v in collate([tr.dataset[i % len(tr.dataset)] for i in range(batch_size)]))
        for _ in range(warmup): tr.train_step(x0, K, c2w)
        if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats(dev)
        sync(dev); t0 = time.perf_counter()
        for _ in range(steps): tr.train_step(x0, K, c2w)
        sync(dev); dt = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == 'cuda' else float('nan')
        # the encoder's share: forward + backward of the U-Net alone under the same autocast
        t = torch.randint(0, cfg.model.T, (batch_size,), device=dev)
        sync(dev); t1 = time.perf_counter()
        for _ in range(steps):
            with torch.autocast(**tr.autocast): planes = tr.model.encode(x0, t)
            planes.float().square().mean().backward()
        sync(dev); unet = (time.perf_counter() - t1) / steps
        n_params = sum(p.numel() for p in tr.model.parameters())
    return dict(config=preset, backend=backend, batch=batch_size, image=res, params_M=n_params / 1e6,
                images_per_s=steps * batch_size / dt, ms_per_step=1e3 * dt / steps, unet_ms=1e3 * unet, peak_MiB=peak)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--configs', nargs='+', default=['small', 'base'], help='training presets to time')
    p.add_argument('--backends', nargs='+', default=['torch', 'triton'], choices=['torch', 'triton', 'auto'])
    p.add_argument('--batch-size', type=int, default=32, help='images per step (one GPU)')
    p.add_argument('--steps', type=int, default=20, help='timed steps')
    p.add_argument('--warmup', type=int, default=5, help='untimed steps first (kernel compilation, allocator)')
    p.add_argument('--device', default=None, help="'cpu' or 'cuda' (default: CUDA when available)")
    p.add_argument('--json', default=None, help='also write the rows to this JSON file')
    a = p.parse_args(argv)
    dev = get_device(a.device)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for preset in a.configs:
            for backend in a.backends:
                try: rows.append(time_config(preset, backend, a.batch_size, a.steps, a.warmup, dev, Path(d)))
                except (RuntimeError, ImportError) as e:
                    rows.append(dict(config=preset, backend=backend, batch=a.batch_size, error=str(e).split('\n')[0][:200]))
                    if dev.type == 'cuda': torch.cuda.empty_cache()
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else platform.processor() or 'CPU'
    print(f"\nTraining throughput, {name}, torch {torch.__version__}, {datetime.date.today()}; bf16 autocast on CUDA; "
          f"batch {a.batch_size}, {a.steps} timed steps after {a.warmup} warm-up steps\n")
    print('| config | params (M) | image | backend | images/s | ms/step | U-Net fwd+bwd ms | peak MiB | speed-up vs torch |')
    print('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    base = {r['config']: r['images_per_s'] for r in rows if r.get('backend') == 'torch' and 'images_per_s' in r}
    for r in rows:
        if 'error' in r:
            print(f"| {r['config']} | | | {r['backend']} | failed: {r['error']} | | | | |"); continue
        sp = f"{r['images_per_s'] / base[r['config']]:.2f}x" if r['config'] in base else ''
        print(f"| {r['config']} | {r['params_M']:.1f} | {r['image']} | {r['backend']} | {r['images_per_s']:.1f} | {r['ms_per_step']:.1f} | "
              f"{r['unet_ms']:.1f} | {r['peak_MiB']:.0f} | {sp} |")
    if a.json: Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == '__main__':
    main()
