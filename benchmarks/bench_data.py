"""Throughput of the procedural scene generator: images per second, per family, and end to end to disk.

"render" times `render_scenes` (scene sampling, cameras, ray casting with shadows and shading), in
chunks of `--chunk` images (default: the library's choice for the device). "to disk" times
`make_dataset` into a temporary folder (rendering, uint8/float16 conversion, device-to-host copies,
safetensors serialisation, sha256, atomic writes). Prints a markdown table. Usage:

    python benchmarks/bench_data.py                      # CPU, 64 x 64, all families
    python benchmarks/bench_data.py --device cuda        # GPU (targets: >= 200 images/s on 2 CPU cores, >= 20,000 on a GPU)
    python benchmarks/bench_data.py --res 128 --n 4096 --families cars chairs --threads 2
"""
from __future__ import annotations
import argparse
import datetime
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from renderdiffusion_nb.core import get_device
from renderdiffusion_nb.data import make_dataset
from renderdiffusion_nb.scenes import FAMILIES, default_chunk, render_scenes


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


def time_render(family, n, res, dev, chunk, repeats, ss):
    "Best images/s (wall clock, and per CPU-second of this process) over `repeats` runs of rendering n scenes, one view each."
    render_scenes(family, torch.arange(min(n, chunk)), 1, res, device=dev, chunk=chunk, supersample=ss)  # warm-up
    best = best_cpu = 0.
    for r in range(repeats):
        sync(dev); t, c = time.perf_counter(), time.process_time()
        render_scenes(family, torch.arange(r * n, (r + 1) * n), 1, res, device=dev, chunk=chunk, supersample=ss)
        sync(dev)
        best, best_cpu = max(best, n / (time.perf_counter() - t)), max(best_cpu, n / (time.process_time() - c))
    return best, best_cpu


def time_disk(family, n, res, dev, ss):
    "Images/s of make_dataset into a fresh temporary folder."
    with tempfile.TemporaryDirectory() as d:
        sync(dev); t = time.perf_counter()
        make_dataset(family, 'train', n, res, Path(d) / 'ds', device=dev, progress=False, supersample=ss)
        sync(dev)
        return n / (time.perf_counter() - t)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default=None, help="'cpu', 'cuda' (default: CUDA when available)")
    p.add_argument('--res', type=int, default=64, help='image size')
    p.add_argument('--n', type=int, default=None, help='images per timed run (default: 512 on CPU, 65536 on GPU)')
    p.add_argument('--chunk', type=int, default=None, help='images per ray-casting call (default: the library default)')
    p.add_argument('--families', nargs='+', default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument('--repeats', type=int, default=2, help='timed runs per family (best is reported)')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    p.add_argument('--supersample', type=int, default=1, help='rays per pixel along each axis (2: anti-aliased)')
    p.add_argument('--no-disk', action='store_true', help='skip the end-to-end make_dataset timing')
    a = p.parse_args(argv)
    dev = get_device(a.device)
    if a.threads: torch.set_num_threads(a.threads)
    n = a.n or (65536 if dev.type == 'cuda' else 512)
    chunk = a.chunk or default_chunk(a.res * a.supersample, dev)
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else f'CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)'
    print(f'device: {name}; torch {torch.__version__}; date {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC')
    print(f'{a.res} x {a.res} images, supersample {a.supersample}, {n} per timed run, chunk {chunk} images, best of {a.repeats}')
    print('(images per CPU-second counts this process only: on a shared machine it shows what a quiet one would give)\n')
    print('| family | render images/s | render images per CPU-second | to disk images/s |')
    print('| --- | ---: | ---: | ---: |')
    for f in a.families:
        r, rc = time_render(f, n, a.res, dev, chunk, a.repeats, a.supersample)
        d = '-' if a.no_disk else f'{time_disk(f, n, a.res, dev, a.supersample):,.0f}'
        print(f'| {f} | {r:,.0f} | {rc:,.0f} | {d} |', flush=True)


if __name__ == '__main__':
    main()
