"""The t_r sweep on out-of-distribution inputs, per scene, with paired differences against t_r = 0.

For each variant (the test scenes as trained, or with a floor colour, light direction or material no training scene
had), every test scene is reconstructed from its input view with `reconstruct` (DDIM, `--steps` reverse steps from
t_r, the final triplane kept) at each t_r, with the same noise for every t_r. Scores, per scene:

- `input`: PSNR of the re-rendered input view against the (out-of-distribution) input;
- `novel`: PSNR of a novel view against the same scene's truth as the variant renders it;
- `novel_id`: PSNR of that novel view against the scene rendered as in training (same objects, training floor,
  light and materials): how close the reconstruction is pulled to the training distribution;
- `depth`: mean absolute depth error of the novel view on the pixels that hit the scene (the geometry is the same
  in every variant, so this is the one score that no change of colour or light moves).

Prints means with standard errors and the paired difference against t_r = 0 (mean +- standard error over scenes),
and writes every per-scene score to JSON. Usage:

    python benchmarks/ood_sweep.py --model clevr1 --scenes 12 --t_r 0 10 20 40 80 150 --json out.json
    python benchmarks/ood_sweep.py --table out.json
"""
from __future__ import annotations
import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from renderdiffusion_nb.cameras import Cameras
from renderdiffusion_nb.evaluate import depth_mae, psnr
from renderdiffusion_nb.model import load_pretrained
from renderdiffusion_nb.reconstruct import OOD_VARIANTS, reconstruct
from renderdiffusion_nb.scenes import render_scene

# The library's variants (keywords of `render_scene`) plus a material no family has: every object glossy, with a
# specular strength of 1.2 (clevr objects have 0.6 or 0.05, chairs 0.05 to 0.3).
VARIANTS = {**OOD_VARIANTS, 'glossy material': {'spec': 1.2}}


def sweep(model, family, variants, t_rs, n_scenes, steps, seed, test_seed=0):
    "Per-scene scores: {variant: {t_r: {score: [n_scenes floats]}}}."
    S, out = model.config.image_size, {}
    render = lambda i, **kw: render_scene(family, i, views=2, res=S, split='test', seed=test_seed, device='cpu', **kw)
    as_trained = [render(i) for i in range(n_scenes)]
    cam_in = Cameras.cat([s['cameras'][:1] for s in as_trained])
    cam_nv = Cameras.cat([s['cameras'][1:2] for s in as_trained])
    nv_id = torch.cat([s['image'][1:2] for s in as_trained])
    depth, mask = torch.cat([s['depth'][1:2] for s in as_trained]), torch.cat([s['mask'][1:2] for s in as_trained])
    for name, kw in variants.items():
        scenes = [render(i, **kw) for i in range(n_scenes)]
        image, nv = torch.cat([s['image'][:1] for s in scenes]), torch.cat([s['image'][1:2] for s in scenes])
        out[name] = {}
        for t_r in t_rs:
            t0 = time.time()
            rec = reconstruct(model, image, cam_in, t_r=t_r, steps=steps, generator=torch.Generator().manual_seed(seed))
            with torch.no_grad(): r = model.render(rec['planes'], cam_nv)
            out[name][t_r] = {'input': psnr(rec['image'], image).tolist(), 'novel': psnr(r['rgb'], nv).tolist(),
                              'novel_id': psnr(r['rgb'], nv_id).tolist(), 'depth': depth_mae(r['depth'], depth, mask).tolist()}
            m = {k: sum(v) / len(v) for k, v in out[name][t_r].items()}
            print(f"  {name:18s} t_r={t_r:4d}  " + '  '.join(f'{k} {v:6.3f}' for k, v in m.items()) + f'  ({time.time() - t0:.0f} s)',
                  file=sys.stderr, flush=True)
    return out


def mean_se(x):
    "Mean and standard error of a list."
    n = len(x); m = sum(x) / n
    return m, (math.sqrt(sum((v - m) ** 2 for v in x) / (n - 1) / n) if n > 1 else float('nan'))


def table(res, keys=('input', 'novel', 'novel_id', 'depth')):
    "Markdown table: mean of each score, and its paired difference against t_r = 0 (mean +- s.e.)."
    lines = ['| variant | t_r | ' + ' | '.join(f'{k} | d{k} vs t_r=0' for k in keys) + ' |',
             '| --- | --- | ' + ' | '.join('--- | ---' for _ in keys) + ' |']
    for name, by_t in res.items():
        base = by_t[min(by_t, key=int)]
        for t_r, sc in by_t.items():
            cells = []
            for k in keys:
                fmt = '{:.3f}' if k == 'depth' else '{:.2f}'
                d, se = mean_se([a - b for a, b in zip(sc[k], base[k])])
                diff = f'{d:+.3f} ± {se:.3f}' if k == 'depth' else f'{d:+.2f} ± {se:.2f}'
                cells += [fmt.format(mean_se(sc[k])[0]), '-' if sc is base else diff]
            lines.append(f'| {name} | {t_r} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', default='clevr1', help='a shipped model (its family gives the test scenes)')
    p.add_argument('--scenes', type=int, default=12, help='test scenes per variant')
    p.add_argument('--t_r', type=int, nargs='+', default=[0, 10, 20, 40, 80, 150])
    p.add_argument('--steps', type=int, default=2, help='DDIM reverse steps from each t_r (2: x0 predicted at t_r, then a t = 0 pass)')
    p.add_argument('--variants', nargs='+', default=None, help=f'a subset of {list(VARIANTS)}')
    p.add_argument('--seed', type=int, default=0, help='seed of the reconstruction noise')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    p.add_argument('--json', default=None, help='write the per-scene scores here')
    p.add_argument('--table', default=None, help='only print the table of a JSON file this script wrote')
    a = p.parse_args()
    if a.table: return print(table(json.loads(Path(a.table).read_text())['scores']))
    if a.threads: torch.set_num_threads(a.threads)
    model = load_pretrained(a.model, device='cpu').eval()
    family = a.model.split('-')[0]
    variants = VARIANTS if a.variants is None else {k: VARIANTS[k] for k in a.variants}
    t0 = time.time()
    res = sweep(model, family, variants, a.t_r, a.scenes, a.steps, a.seed)
    print(f'{a.model}, {a.scenes} test scenes, DDIM {a.steps} steps from t_r, 1 novel view; '
          f'{time.time() - t0:.0f} s on {torch.get_num_threads()} CPU threads\n')
    print(table(res))
    if a.json:
        meta = {'model': a.model, 'family': family, 'scenes': a.scenes, 'steps': a.steps, 'seed': a.seed, 'device': 'cpu'}
        Path(a.json).write_text(json.dumps({**meta, 'variants': variants, 'scores': res}, indent=1))


if __name__ == '__main__':
    main()
