"""Latency of the three uses of a model, with the PyTorch and the Triton renderer side by side.

Measures, for one model config (weights random: speed does not depend on them):
- reconstruction at t_r = 0 (one denoiser pass) of one image and of a batch,
- generation of 16 scenes with 50 DDIM steps,
and prints a markdown table with the device and date. Usage:

    python benchmarks/bench_sampling.py                        # on the GPU: small config, torch and triton
    python benchmarks/bench_sampling.py --device cpu --backends torch --gen-steps 5
"""
from __future__ import annotations
import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from renderdiffusion_nb.core import get_device
from renderdiffusion_nb.generate import family_cameras, generate
from renderdiffusion_nb.model import RenderDiffusion
from renderdiffusion_nb.reconstruct import reconstruct


def timed(fn, dev, repeats):
    "Median wall time of `fn()` in ms after one warm-up call."
    fn()
    times = []
    for _ in range(repeats):
        if dev.type == 'cuda': torch.cuda.synchronize(dev)
        t0 = time.perf_counter(); fn()
        if dev.type == 'cuda': torch.cuda.synchronize(dev)
        times.append((time.perf_counter() - t0) * 1000)
    return sorted(times)[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--config', default='small')
    ap.add_argument('--device', default=None)
    ap.add_argument('--backends', default='torch,triton')
    ap.add_argument('--batch', type=int, default=16, help='images in the batched reconstruction')
    ap.add_argument('--gen-n', type=int, default=16)
    ap.add_argument('--gen-steps', type=int, default=50)
    ap.add_argument('--repeats', type=int, default=5)
    a = ap.parse_args()
    dev = get_device(a.device)
    torch.manual_seed(0)
    model = RenderDiffusion(a.config).to(dev).eval()
    S = model.config.image_size
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else (platform.processor() or platform.machine()) + f' ({torch.get_num_threads()} threads)'
    print(f"# Sampling latency, {a.config} config ({S}x{S}, {model.config.n_coarse}+{model.config.n_fine} samples per ray), "
          f"{name}, {datetime.date.today()}, torch {torch.__version__}\n")
    print('| backend | reconstruct 1 image, t_r=0 (ms) | reconstruct %d images, t_r=0 (ms) | generate %d scenes, %d DDIM steps (s) |' % (a.batch, a.gen_n, a.gen_steps))
    print('| --- | --- | --- | --- |')
    rows = {}
    for backend in a.backends.split(','):
        orig = model.render
        model.render = lambda planes, cams, _o=orig, _b=backend, **kw: _o(planes, cams, **{**kw, 'backend': _b})
        cams = family_cameras('clevr1', max(a.batch, a.gen_n), S, generator=torch.Generator().manual_seed(0), device=dev)
        x = torch.rand(a.batch, 3, S, S, device=dev) * 2 - 1
        one = timed(lambda: reconstruct(model, x[:1], cams[:1], t_r=0), dev, a.repeats)
        many = timed(lambda: reconstruct(model, x, cams[:a.batch], t_r=0), dev, a.repeats)
        gen = timed(lambda: generate(model, a.gen_n, cameras=cams[:a.gen_n], steps=a.gen_steps, progress=False), dev, max(1, a.repeats // 3)) / 1000
        model.render = orig
        rows[backend] = (one, many, gen)
        print(f'| {backend} | {one:.1f} | {many:.1f} | {gen:.2f} |', flush=True)
    if 'torch' in rows and 'triton' in rows:
        t, f = rows['torch'], rows['triton']
        print(f"\nTriton speed-up: {t[0] / f[0]:.1f}x (one image), {t[1] / f[1]:.1f}x (batch), {t[2] / f[2]:.1f}x (generation)")


if __name__ == '__main__':
    main()
