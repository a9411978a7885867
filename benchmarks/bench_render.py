"""Time and memory of the PyTorch reference renderer and the fused Triton renderer (fp32, and with precision='bf16'), side by side.

One "render step" is what a training step renders, through the shared entry point
`render_rays(..., backend=)`: a coarse pass without gradients that returns the weights (n_coarse
stratified samples per ray), importance sampling, then the fine pass with gradients on n_coarse +
n_fine sorted samples. Forward = all of that with autograd recording; forward+backward adds the
backward to the planes and the decoder. Three backends run in one process on the same inputs: 'torch', 'triton'
(fp32) and 'triton-bf16' (`render_rays(..., backend='triton', precision='bf16')`). Usage:

    python benchmarks/bench_render.py                   # GPU: the training and 128 x 128 configurations
    python benchmarks/bench_render.py --configs small   # the CPU default (Triton runs in its interpreter there)
    python benchmarks/bench_render.py --json out.json --fit fit.json --sweep
    python benchmarks/bench_render.py --configs train --bwd-variants   # the backward kernel's variants, bf16
"""
from __future__ import annotations
import argparse
import copy
import functools
import datetime
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

if not torch.cuda.is_available(): os.environ.setdefault('TRITON_INTERPRET', '1') # the kernels in Triton's interpreter, set before triton loads

from renderdiffusion_nb.cameras import get_rays, ray_box_intersect, sample_cameras
from renderdiffusion_nb import render_triton as rt
from renderdiffusion_nb.render_triton import _RenderSamples, render_cost, render_samples_triton
from renderdiffusion_nb.triplane import TriplaneDecoder

from renderdiffusion_nb.render import importance_samples, render_samples, stratified_samples
from renderdiffusion_nb.rendering import render_rays
from renderdiffusion_nb.render_triton import importance_samples_triton

CONFIGS = { # B images of px x px rays; C, R of the triplane; decoder hidden width
    'train': dict(B=32, px=64, n_coarse=64, n_fine=64, C=32, R=128, hidden=64),
    'hires': dict(B=16, px=128, n_coarse=64, n_fine=64, C=32, R=256, hidden=64),
    'small': dict(B=1, px=16, n_coarse=8, n_fine=8, C=8, R=32, hidden=16),
}
BACKENDS = ('torch', 'triton', 'triton-bf16') # 'triton-bf16': render_rays(backend='triton', precision='bf16')
RENDER_KW = {'torch': dict(backend='torch'), 'triton': dict(backend='triton'), 'triton-bf16': dict(backend='triton', precision='bf16')}


def make_inputs(B, px, n_coarse, n_fine, C, R, hidden, device, seed=0):
    "Random planes and decoder, rays of random cameras, coarse and fine sample depths (fine sorted, importance-like)."
    g = torch.Generator().manual_seed(seed)
    planes = (torch.randn(B, 3, C, R, R, generator=g) * 0.5).to(device)
    dec = TriplaneDecoder(C, hidden).to(device)
    cams = sample_cameras(B, px, px, generator=g)
    rays_o, rays_d = (x.contiguous().to(device) for x in get_rays(cams))
    near, far = ray_box_intersect(rays_o, rays_d)
    u = (torch.arange(n_coarse, device=device) + 0.5) / n_coarse
    t_coarse = near[..., None] + (far - near)[..., None] * u
    u_fine = torch.rand(B, px * px, n_fine, generator=g).to(device)
    t_fine = torch.cat([t_coarse, near[..., None] + (far - near)[..., None] * u_fine], -1).sort(-1).values
    return planes, dec, rays_o, rays_d, near, far, t_coarse, t_fine


def step(backend, cfg, planes, dec, rays_o, rays_d, near, far, backward):
    "One render step through the shared entry point `render_rays`: coarse pass, importance samples, fine pass, optionally its backward."
    out = render_rays(planes, dec, rays_o, rays_d, near, far, n_coarse=cfg['n_coarse'], n_fine=cfg['n_fine'], **RENDER_KW[backend])
    if backward: (out['rgb'].square().sum() + out['depth'].sum() + out['opacity'].sum()).backward()
    return out


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()

def time_ms(fn, device, budget_s=1.5, max_reps=50):
    "Median wall time (ms) of fn after two warm-up calls, on the GPU between synchronisations with CUDA events."
    for _ in range(2 if device.type == 'cuda' else 1): fn()
    sync(device)
    t0 = time.perf_counter(); fn(); sync(device); est = time.perf_counter() - t0
    reps = int(max(3 if device.type == 'cuda' else 1, min(max_reps, budget_s / max(est, 1e-6))))
    ts = []
    for _ in range(reps):
        if device.type == 'cuda':
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record(); fn(); b.record(); b.synchronize(); ts.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter(); fn(); ts.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(ts)

def peak_mib(fn, device):
    "Peak GPU memory allocated (MiB) during one call of fn, inputs included."
    if device.type != 'cuda': return float('nan')
    sync(device); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(device)
    fn(); sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def ceilings(device):
    "Measured device-to-device copy bandwidth (B/s, read + write) and fp32 / tf32 matmul rates (FLOP/s)."
    if device.type != 'cuda': return dict(bw=float('nan'), fp32=float('nan'), tf32=float('nan'))
    x = torch.empty(2**28, device=device); y = torch.empty_like(x)
    bw = 2 * x.numel() * 4 / (time_ms(lambda: y.copy_(x), device, 1.0) / 1e3)
    a, b = torch.randn(8192, 8192, device=device), torch.randn(8192, 8192, device=device)
    rates = {}
    for name, tf32 in (('fp32', False), ('tf32', True)):
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        rates[name] = 2 * 8192**3 / (time_ms(lambda: a @ b, device, 1.0) / 1e3)
        torch.backends.cuda.matmul.allow_tf32 = old
    del x, y, a, b
    return dict(bw=bw, **rates)


def floor_ms(cfg, ceil):
    "The step's floor: arithmetic at the fp32 rate or bytes at the copy bandwidth, whichever is larger (forward, forward+backward)."
    B, N, Sc, Sf = cfg['B'], cfg['px']**2, cfg['n_coarse'], cfg['n_coarse'] + cfg['n_fine']
    kw = dict(C=cfg['C'], R=cfg['R'], hidden=cfg['hidden'])
    coarse, fine_f, fine_b = render_cost(B, N, Sc, **kw), render_cost(B, N, Sf, **kw), render_cost(B, N, Sf, backward=True, **kw)
    coarse['floor_bytes'] += B * N * Sc * 4 # the weights it writes
    res = {}
    for name, parts in (('fwd', (coarse, fine_f)), ('fwdbwd', (coarse, fine_b))):
        flop, nbytes = sum(p['flop'] for p in parts), sum(p['floor_bytes'] for p in parts)
        res[name] = dict(gflop=flop / 1e9, gbytes=nbytes / 1e9, ms=1e3 * max(flop / ceil['fp32'], nbytes / ceil['bw']),
                         ms_tf32=1e3 * max(flop / ceil['tf32'], nbytes / ceil['bw']))
    return res


def bench_config(name, cfg, device):
    "Forward ms, forward+backward ms and peak MiB of both backends on one configuration."
    planes, dec, rays_o, rays_d, near, far = make_inputs(**cfg, device=device)[:6] # only the step's inputs stay allocated
    planes.requires_grad_()
    rest = (rays_o, rays_d, near, far)
    res = {}
    for backend in BACKENDS:
        r = {}
        try:
            r['fwd_ms'] = time_ms(lambda: step(backend, cfg, planes, dec, *rest, backward=False), device)
            r['fwdbwd_ms'] = time_ms(lambda: step(backend, cfg, planes, dec, *rest, backward=True), device)
            planes.grad = None; dec.zero_grad(set_to_none=True)
            r['fwd_mib'] = peak_mib(lambda: step(backend, cfg, planes, dec, *rest, backward=False), device)
            r['fwdbwd_mib'] = peak_mib(lambda: step(backend, cfg, planes, dec, *rest, backward=True), device)
        except torch.cuda.OutOfMemoryError:
            r['oom'] = True
        planes.grad = None; dec.zero_grad(set_to_none=True)
        torch.cuda.empty_cache() if device.type == 'cuda' else None
        res[backend] = r
    return res


def breakdown(name, cfg, device):
    "Where a render step's time goes, per backend: the coarse pass, the fine pass's depths, the fine pass forward and forward+backward."
    planes, dec, rays_o, rays_d, near, far = make_inputs(**cfg, device=device)[:6]
    bg = torch.ones(cfg['B'], 3, device=device)
    g = lambda: torch.Generator(device=device).manual_seed(0)
    rows = {}
    for backend, comp, merge in (('torch', render_samples, importance_samples), ('triton', render_samples_triton, importance_samples_triton),
                                 ('triton-bf16', functools.partial(render_samples_triton, precision='bf16'), importance_samples_triton)):
        with torch.no_grad():
            tc = stratified_samples(near, far, cfg['n_coarse'], True, g())
            w = comp(planes, dec, rays_o, rays_d, tc, near, far, bg, return_weights=True)['weights']
            t = merge(tc, w, near, far, cfg['n_fine'], True, g())
        p = planes.detach().requires_grad_()
        def fine(bwd):
            out = comp(p, dec, rays_o, rays_d, t, near, far, bg)
            if bwd: (out['rgb'].square().sum() + out['depth'].sum() + out['opacity'].sum()).backward()
        def coarse():
            with torch.no_grad(): comp(planes, dec, rays_o, rays_d, stratified_samples(near, far, cfg['n_coarse'], True, g()), near, far, bg, return_weights=True)
        try:
            rows[backend] = dict(coarse_ms=time_ms(coarse, device, 0.5), fine_depths_ms=time_ms(lambda: merge(tc, w, near, far, cfg['n_fine'], True, g()), device, 0.5),
                                 fine_depths_mib=peak_mib(lambda: merge(tc, w, near, far, cfg['n_fine'], True, g()), device),
                                 fine_fwd_ms=time_ms(lambda: fine(False), device, 0.5), fine_fwdbwd_ms=time_ms(lambda: fine(True), device, 0.5))
        except torch.cuda.OutOfMemoryError: rows[backend] = dict(oom=True)
        p.grad = None; dec.zero_grad(set_to_none=True)
        if device.type == 'cuda': torch.cuda.empty_cache()
        print(name, backend, rows[backend], flush=True)
    return rows


class _Capped:
    "A Triton kernel launched with a cap on registers per thread (Triton's `maxnreg` launch option)."
    def __init__(self, kernel, maxnreg): self.kernel, self.maxnreg = kernel, maxnreg
    def __getitem__(self, grid): return functools.partial(self.kernel[grid], maxnreg=self.maxnreg)

BWD_VARIANTS = { # name: (register cap, warps per 16-ray program, planes' gradient, decoder's gradient)
    'default': (None, None, True, True), # the library's launch: 2 warps, 255 registers
    'cap 168': (168, None, True, True), # 6 programs of 2 warps per multiprocessor instead of 4, some values spilled
    'cap 128': (128, None, True, True), # 8 programs, more spilled
    '4 warps': (None, 4, True, True), # 224 registers: 2 programs per SM
    '4 warps, cap 168': (168, 4, True, True), # 3 programs of 4 warps
    '4 warps, cap 128': (128, 4, True, True), # 4 programs of 4 warps
    'planes only': (None, None, True, False), # the decoder frozen: no weight gradients
    'decoder only': (None, None, False, True), # planes without gradient: no scatter, no atomics in the loop
}

def bwd_variants(name, cfg, device):
    """The bf16 fine pass (forward, forward+backward) with variants of the backward kernel: a register cap, the warps of a
    program, one gradient at a time. The variants are set here by replacing `rt._render_bwd_kernel` and
    `rt._launch_config` for the call; the library has no switch for them."""
    planes, dec, rays_o, rays_d, near, far, _, t = make_inputs(**cfg, device=device)
    bg = torch.ones(cfg['B'], 3, device=device)
    kernel, launch, rows = rt._render_bwd_kernel, rt._launch_config, {}
    for variant, (maxnreg, warps, grad_planes, grad_dec) in BWD_VARIANTS.items():
        p = planes.detach().requires_grad_(grad_planes)
        for q in dec.parameters(): q.requires_grad_(grad_dec)
        def fine(bwd):
            out = render_samples_triton(p, dec, rays_o, rays_d, t, near, far, bg, precision='bf16')
            if bwd: (out['rgb'].square().sum() + out['depth'].sum() + out['opacity'].sum()).backward()
        try:
            if maxnreg is not None: rt._render_bwd_kernel = _Capped(kernel, maxnreg)
            if warps is not None: rt._launch_config = lambda *args: launch(*args)[:3] + (warps,) + launch(*args)[4:]
            fwd, fwdbwd = time_ms(lambda: fine(False), device, 0.5), time_ms(lambda: fine(True), device, 0.5)
            rows[variant] = dict(fine_fwd_ms=fwd, fine_fwdbwd_ms=fwdbwd, bwd_ms=fwdbwd - fwd)
        finally:
            rt._render_bwd_kernel, rt._launch_config = kernel, launch
        p.grad = None; dec.zero_grad(set_to_none=True)
        print(name, 'backward', variant, rows[variant], flush=True)
    for q in dec.parameters(): q.requires_grad_(True)
    return rows


LAUNCHES = [ # (forward rays/program, warps, backward rays/program, warps, product precision); 'bf16' reads a bf16 plane copy
    (64, 4, 16, 4, 'tf32x3'), (64, 4, 16, 4, 'ieee'), (64, 4, 16, 4, 'tf32'), (64, 4, 16, 2, 'tf32x3'), (32, 2, 16, 2, 'tf32x3'),
    (32, 2, 16, 2, 'bf16'), (32, 2, 16, 4, 'bf16'), (32, 2, 32, 4, 'bf16'), (64, 4, 16, 2, 'bf16'), (16, 1, 16, 1, 'bf16')]

def _fine(planes, params, shift, rays_o, rays_d, t, near, far, bg, launch, backward):
    "The fine pass through the autograd Function with a given launch configuration."
    with torch.set_grad_enabled(backward):
        out = _RenderSamples.apply(planes, *params, rays_o, rays_d, t, near, far, bg, shift, False, launch)
        if backward: (out[0].square().sum() + out[1].sum() + out[2].sum()).backward()
    return out

def accuracy(launch, device):
    "Max relative error (outputs and every gradient) against float64 `render_samples`, 1000 rays x 97 samples, C = 24."
    g = torch.Generator().manual_seed(1)
    B, N, S, C, R = 2, 500, 97, 24, 37
    planes = torch.randn(B, 3, C, R, R, generator=g).to(device)
    dec = TriplaneDecoder(C, 64).to(device)
    with torch.no_grad():
        for q in dec.parameters(): q.copy_(torch.randn(q.shape, generator=g).to(device) * 0.3)
    rays_o, rays_d = (x.contiguous().to(device) for x in get_rays(sample_cameras(B, 20, 25, generator=g)))
    near, far = ray_box_intersect(rays_o, rays_d)
    t = torch.minimum(near[..., None] + torch.rand(B, N, S, generator=g).to(device).sort(-1).values * (far - near)[..., None], far[..., None])
    bg = torch.rand(B, 3, generator=g).to(device)
    p32 = planes.clone().requires_grad_(); ps = [q.detach().clone().requires_grad_() for q in dec.parameters()]
    out = _fine(p32, ps, dec.density_shift, rays_o, rays_d, t, near, far, bg, launch, True)
    p64, d64 = planes.double().requires_grad_(), copy.deepcopy(dec).double()
    ref = render_samples(p64, d64, rays_o.double(), rays_d.double(), t.double(), near.double(), far.double(), bg.double())
    (ref['rgb'].square().sum() + ref['depth'].sum() + ref['opacity'].sum()).backward()
    rel = lambda a, b: ((a.double() - b).abs().max() / b.abs().max()).item()
    errs = dict(rgb=rel(out[0], ref['rgb']), depth=rel(out[1], ref['depth']), opacity=rel(out[2], ref['opacity']), planes=rel(p32.grad, p64.grad))
    errs |= {n: rel(a.grad, b.grad) for a, (n, b) in zip(ps, d64.named_parameters())}
    return errs

def sweep(device):
    "Fine-pass time (training configuration) and accuracy of the Triton kernels for several launch configurations."
    cfg = CONFIGS['train']
    planes, dec, rays_o, rays_d, near, far, _, t = make_inputs(**cfg, device=device)
    bg = torch.ones(cfg['B'], 3, device=device)
    params = [dec.fc1.weight, dec.fc1.bias, dec.fc2.weight, dec.fc2.bias]
    rows = []
    for launch in LAUNCHES:
        p = planes.detach().requires_grad_()
        ws = [w.detach().requires_grad_() for w in params]
        run = lambda bwd: _fine(p, ws, dec.density_shift, rays_o, rays_d, t, near, far, bg, launch, bwd)
        try:
            rows.append(dict(launch=launch, fwd_ms=time_ms(lambda: run(False), device, 0.5), fwdbwd_ms=time_ms(lambda: run(True), device, 0.5)))
            rows[-1]['errors'] = accuracy(launch, device)
            rows[-1]['max_error'] = max(rows[-1]['errors'].values())
        except Exception as e: rows.append(dict(launch=launch, error=repr(e)[:300]))
        print(rows[-1], flush=True)
    rows.append(dict(compiled=compiled_info()))
    return rows


def compiled_info():
    "Registers, spills and shared memory of every compiled variant of the two kernels (Triton 3.x caches)."
    from renderdiffusion_nb import render_triton as rt
    info = []
    for k in (rt._render_fwd_kernel, rt._render_bwd_kernel, rt._importance_kernel):
        try:
            for cache in k.device_caches.values():
                for key, ck in cache[0].items():
                    info.append(dict(kernel=k.__name__ if hasattr(k, '__name__') else str(k), n_regs=getattr(ck, 'n_regs', None), n_spills=getattr(ck, 'n_spills', None),
                                     shared=getattr(ck.metadata, 'shared', None), num_warps=getattr(ck.metadata, 'num_warps', None), consts=str(getattr(ck.metadata, 'constants', ''))[:200]))
        except Exception as e: info.append(dict(error=repr(e)[:200]))
    return info


def fit(device, steps=300, B=4, px=32, S=48, C=16, R=32, seed=0, through='samples'):
    """Fit a random triplane + decoder to images of a sphere with both backends from the same start: the two loss curves.
    through='samples': the fine pass alone (`render_samples` / `render_samples_triton` at given jittered depths);
    'rays': whole render steps, `render_rays` with S/2 coarse and S/2 fine samples, jittered by the same generator seeds."""
    if through not in ('samples', 'rays'): raise ValueError(f"through must be 'samples' or 'rays', got {through!r}")
    from renderdiffusion_nb.triplane import sphere_triplane
    teacher_planes, teacher = sphere_triplane(n_features=8, resolution=64)
    teacher_planes, teacher = teacher_planes.to(device), teacher.to(device)
    g = torch.Generator().manual_seed(seed)
    init_planes = (torch.randn(1, 3, C, R, R, generator=g) * 0.1).to(device)
    init_dec = TriplaneDecoder(C, 32).to(device)
    batches = []
    for _ in range(steps):
        rays_o, rays_d = (x.contiguous().to(device) for x in get_rays(sample_cameras(B, px, px, generator=g)))
        near, far = ray_box_intersect(rays_o, rays_d)
        t = near[..., None] + (far - near)[..., None] * (torch.arange(S, device=device) + torch.rand(B, px * px, S, generator=g).to(device)) / S
        t = torch.minimum(torch.maximum(t, near[..., None]), far[..., None])
        with torch.no_grad(): target = render_samples(teacher_planes.expand(B, -1, -1, -1, -1), teacher, rays_o, rays_d, t, near, far, 1.0)['rgb']
        batches.append((rays_o, rays_d, t, near, far, target))
    curves = {}
    for backend, fn in (('torch', render_samples), ('triton', render_samples_triton), ('triton-bf16', functools.partial(render_samples_triton, precision='bf16'))):
        planes, dec = init_planes.clone().requires_grad_(), copy.deepcopy(init_dec)
        opt = torch.optim.Adam([planes, *dec.parameters()], lr=1e-2)
        curves[backend] = []
        for i, (rays_o, rays_d, t, near, far, target) in enumerate(batches):
            if through == 'samples': out = fn(planes.expand(B, -1, -1, -1, -1), dec, rays_o, rays_d, t, near, far, 1.0)
            else: out = render_rays(planes.expand(B, -1, -1, -1, -1), dec, rays_o, rays_d, near, far, n_coarse=S // 2, n_fine=S // 2, jitter=True,
                                    generator=torch.Generator(device).manual_seed(i), **RENDER_KW[backend])
            loss = F.mse_loss(out['rgb'], target)
            opt.zero_grad(); loss.backward(); opt.step()
            curves[backend].append(loss.item())
    a, b, c = (torch.tensor(curves[k]) for k in ('torch', 'triton', 'triton-bf16'))
    return dict(steps=steps, through=through, curves=curves, max_rel_diff=((a - b).abs() / a).max().item(), max_rel_diff_bf16=((a - c).abs() / a).max().item(),
                first=(a[0].item(), b[0].item(), c[0].item()), last=(a[-10:].mean().item(), b[-10:].mean().item(), c[-10:].mean().item()))


def table(results, device_name):
    "The results as a Markdown table."
    lines = [f'device: {device_name}; date: {results["date"]}; Triton launch (fwd rays/program, warps, bwd rays/program, warps, dot precision): '
             f'{results["launch"]}, bf16: {results["launch_bf16"]}', '',
             '| config | backend | fwd ms | fwd+bwd ms | peak MiB fwd | peak MiB fwd+bwd | speed-up fwd | speed-up fwd+bwd | memory ratio fwd+bwd | floor ms fwd / fwd+bwd (fp32) | x floor fwd+bwd |',
             '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for name, r in results['configs'].items():
        ref, fl = r['torch'], r['floor']
        for backend in BACKENDS:
            x = r[backend]
            if x.get('oom'): lines.append(f'| {name} | {backend} | OOM | | | | | | | | |'); continue
            sp = lambda k: f"{ref[k] / x[k]:.1f}x" if not ref.get('oom') else 'ref OOM'
            mem = f"{ref['fwdbwd_mib'] / x['fwdbwd_mib']:.1f}x" if not ref.get('oom') and x['fwdbwd_mib'] == x['fwdbwd_mib'] else ''
            lines.append(f"| {name} | {backend} | {x['fwd_ms']:.2f} | {x['fwdbwd_ms']:.2f} | {x['fwd_mib']:.0f} | {x['fwdbwd_mib']:.0f} | "
                         f"{sp('fwd_ms')} | {sp('fwdbwd_ms')} | {mem} | {fl['fwd']['ms']:.2f} / {fl['fwdbwd']['ms']:.2f} | {x['fwdbwd_ms'] / fl['fwdbwd']['ms']:.1f} |")
    return '\n'.join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--configs', default=None, help="comma-separated names from " + ', '.join(CONFIGS) + " (default: train,hires on CUDA, small on CPU)")
    ap.add_argument('--json', default=None, help='write all numbers to this JSON file')
    ap.add_argument('--sweep', action='store_true', help='also time launch configurations of the Triton kernels')
    ap.add_argument('--breakdown', action='store_true', help='also time the parts of a render step (coarse pass, fine depths, fine pass) per backend')
    ap.add_argument('--bwd-variants', action='store_true', help='also time the bf16 fine pass with variants of the backward kernel (register cap, warps, one gradient at a time)')
    ap.add_argument('--fit', default=None, help='also run the loss-curve comparisons (fine pass alone, whole render steps) and write them to this JSON file')
    args = ap.parse_args()
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    device_name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU (Triton interpreter for the triton backend)'
    names = (args.configs or ('train,hires' if device.type == 'cuda' else 'small')).split(',')
    ceil = ceilings(device)
    results = dict(device=device_name, date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
                   torch=torch.__version__, ceilings=ceil, configs={})
    print(f"ceilings: copy {ceil['bw'] / 1e12:.2f} TB/s, fp32 {ceil['fp32'] / 1e12:.1f} TFLOP/s, tf32 {ceil['tf32'] / 1e12:.1f} TFLOP/s", flush=True)
    if args.sweep and device.type == 'cuda':
        results['sweep'] = sweep(device)
        ok = [r for r in results['sweep'] if r.get('max_error', 1.) < 1e-4]
        best = min(ok, key=lambda r: r['fwdbwd_ms'])['launch']
        bf = [r for r in results['sweep'] if 'fwdbwd_ms' in r and r['launch'][4] == 'bf16']
        best_bf16 = min(bf, key=lambda r: r['fwdbwd_ms'])['launch'] if bf else None
        print('fastest launch within 1e-4 of float64:', best, '; fastest bf16 launch:', best_bf16, flush=True)
        default = rt._launch_config
        rt._launch_config = lambda device, n_rays, precision='fp32': best if precision == 'fp32' else (best_bf16 or default(device, n_rays, precision)) # the benchmark below runs with them
    n = CONFIGS[names[0]]['px'] ** 2
    results['launch'] = rt._launch_config(device, n)
    results['launch_bf16'] = rt._launch_config(device, n, 'bf16')
    for name in names:
        r = bench_config(name, CONFIGS[name], device)
        r['floor'] = floor_ms(CONFIGS[name], ceil) if device.type == 'cuda' else dict(fwd=dict(ms=float('nan')), fwdbwd=dict(ms=float('nan')))
        r['config'] = CONFIGS[name]
        if args.breakdown: r['breakdown'] = breakdown(name, CONFIGS[name], device)
        if args.bwd_variants: r['bwd_variants'] = bwd_variants(name, CONFIGS[name], device)
        results['configs'][name] = r
        print(name, json.dumps(r), flush=True)
        if args.json:
            with open(args.json, 'w') as fh: json.dump(results, fh, indent=1)
    if args.fit:
        f = {through: fit(device, through=through) for through in ('samples', 'rays')}
        with open(args.fit, 'w') as fh: json.dump(f, fh)
        for through, r in f.items():
            print(f'fit through {through}: max relative difference of the loss curves (triton, triton-bf16 against torch)', r['max_rel_diff'],
                  r['max_rel_diff_bf16'], 'first', r['first'], 'last 10 mean', r['last'], flush=True)
    if args.json:
        with open(args.json, 'w') as fh: json.dump(results, fh, indent=1)
    print(f"ceilings measured: copy {ceil['bw'] / 1e12:.2f} TB/s (read + write), fp32 matmul {ceil['fp32'] / 1e12:.1f} TFLOP/s, tf32 {ceil['tf32'] / 1e12:.1f} TFLOP/s")
    for name, r in results['configs'].items():
        fl = r['floor']['fwdbwd'] if device.type == 'cuda' else None
        if fl: print(f"{name}: floor fwd+bwd {fl['gflop']:.0f} GFLOP, {fl['gbytes']:.2f} GB -> {fl['ms']:.2f} ms at fp32 ({fl['ms_tf32']:.2f} ms at tf32)")
    print(table(results, device_name))
    if args.breakdown:
        print('\n| config | backend | coarse pass ms | fine depths ms | fine depths peak MiB | fine pass fwd ms | fine pass fwd+bwd ms |\n| --- | --- | --- | --- | --- | --- | --- |')
        for name, r in results['configs'].items():
            for backend, x in r['breakdown'].items():
                if x.get('oom'): print(f'| {name} | {backend} | OOM | | | | |'); continue
                print(f"| {name} | {backend} | {x['coarse_ms']:.2f} | {x['fine_depths_ms']:.2f} | {x['fine_depths_mib']:.0f} | {x['fine_fwd_ms']:.2f} | {x['fine_fwdbwd_ms']:.2f} |")
    if args.bwd_variants:
        print('\n| config | backward variant (bf16 fine pass) | fwd ms | fwd+bwd ms | difference ms |\n| --- | --- | --- | --- | --- |')
        for name, r in results['configs'].items():
            for variant, x in r['bwd_variants'].items():
                print(f"| {name} | {variant} | {x['fine_fwd_ms']:.2f} | {x['fine_fwdbwd_ms']:.2f} | {x['bwd_ms']:.2f} |")
    if device.type == 'cuda': print('\ncompiled kernels:', json.dumps(compiled_info()))


if __name__ == '__main__':
    main()
