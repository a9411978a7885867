"The fused Triton renderer against the reference renderer: outputs, every gradient, awkward sizes, bad input."
import copy
import functools
import os

import pytest
import torch
import torch.nn.functional as F

from renderdiffusion_nb.render_triton import render_samples_triton
from renderdiffusion_nb.triplane import TriplaneDecoder

from renderdiffusion_nb.render import render_samples as reference

CUDA = torch.cuda.is_available()
cuda_only = pytest.mark.skipif(not CUDA, reason='needs a CUDA GPU')
cpu_only = pytest.mark.skipif(CUDA, reason='the interpreter path runs only on machines without a GPU')


def problem(B=2, N=10, S=7, C=5, R=6, hidden=12, seed=0, device='cpu', scale=0.7):
    "Random planes and decoder, rays through the box (one that misses: near == far), samples partly outside the box."
    g = torch.Generator().manual_seed(seed)
    planes = torch.randn(B, 3, C, R, R, generator=g)
    dec = TriplaneDecoder(C, hidden, density_shift=-0.5)
    with torch.no_grad():
        for p in dec.parameters(): p.copy_(torch.randn(p.shape, generator=g) * scale)
    rays_o = torch.randn(B, N, 3, generator=g) * 0.3 - torch.tensor([0., 0., 2.5])
    rays_d = F.normalize(torch.randn(B, N, 3, generator=g) * 0.3 + torch.tensor([0., 0., 1.]), dim=-1)
    near = 1.5 + 0.3 * torch.rand(B, N, generator=g)
    far = near + 1.5 + torch.rand(B, N, generator=g)
    far[0, 0] = near[0, 0]
    t = near[..., None] + torch.rand(B, N, S, generator=g).sort(-1).values * (far - near)[..., None]
    t = torch.minimum(torch.maximum(t, near[..., None]), far[..., None])
    bg = torch.rand(B, 3, generator=g)
    return [x.to(device) for x in (planes,)] + [dec.to(device)] + [x.to(device) for x in (rays_o, rays_d, t, near, far, bg)]


def _errors(fn, planes, dec, args, ref, dirs, dtype, grad_planes, grad_dec, return_weights):
    "Max relative errors of fn's outputs and gradients (computed in dtype) against float64 ones."
    p = planes.detach().to(dtype).requires_grad_(grad_planes)
    d = copy.deepcopy(dec).to(dtype).requires_grad_(grad_dec)
    out = fn(p, d, *[x.to(dtype) if isinstance(x, torch.Tensor) else x for x in args], return_weights=return_weights)
    assert set(out) == set(ref[0])
    for k in out: assert torch.isfinite(out[k]).all(), f'{k} has unwritten (NaN) or non-finite elements'
    rel = lambda a, b: ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
    errs = {k: rel(out[k], ref[0][k]) for k in out}
    if grad_planes or grad_dec:
        sum((out[k] * dirs[k].to(out[k].dtype)).sum() for k in dirs).backward()
        if grad_planes: errs['planes'] = rel(p.grad, ref[1])
        else: assert p.grad is None
        if grad_dec: errs |= {n: rel(a.grad, b) for (n, a), b in zip(d.named_parameters(), ref[2])}
    return errs

def compare(planes, dec, rays_o, rays_d, t, near, far, bg, return_weights=True, grad_planes=True, grad_dec=True, seed=1, precision='fp32'):
    "Relative errors of the Triton renderer and of the float32 reference, both against the float64 reference."
    args = (rays_o, rays_d, t, near, far, bg)
    p64, d64 = planes.detach().double().requires_grad_(), copy.deepcopy(dec).double()
    ref = reference(p64, d64, *[x.double() if isinstance(x, torch.Tensor) else x for x in args], return_weights=return_weights)
    g = torch.Generator(device=planes.device).manual_seed(seed)
    dirs = {k: torch.randn(v.shape, generator=g, device=planes.device) for k, v in ref.items()}
    sum((ref[k] * dirs[k].double()).sum() for k in dirs).backward()
    ref = ({k: v.detach() for k, v in ref.items()}, p64.grad, [q.grad for q in d64.parameters()])
    kw = dict(grad_planes=grad_planes, grad_dec=grad_dec, return_weights=return_weights)
    return (_errors(functools.partial(render_samples_triton, precision=precision), planes, dec, args, ref, dirs, torch.float32, **kw),
            _errors(reference, planes, dec, args, ref, dirs, torch.float32, **kw))

def assert_close(errs, floor=2e-5, factor=8):
    """Each Triton error is under `floor` or within `factor` times the float32 reference's own error.
    The backward forms each sample's suffix sum of dL/dw_j w_j as the ray's total minus a running prefix (one pass, nothing
    stored per sample), so where a decoder gradient cancels (a sum over all samples far smaller than its terms) that
    difference's rounding shows: up to about 5x torch's own error on these problems (fc2.bias, 1.5e-4 against 3.2e-5)."""
    ours, theirs = errs
    bad = {k: (ours[k], theirs[k]) for k in ours if ours[k] > max(floor, factor * theirs[k])}
    assert not bad, f'(triton, torch fp32) relative errors against float64: {bad}'


@cpu_only
@pytest.mark.parametrize('kw', [dict(), dict(C=16, hidden=16, R=8, S=5), dict(B=1, N=3, S=1), dict(B=3, N=7, S=9, C=3, hidden=5, R=2)])
def test_interpreter_matches_reference(kw):
    assert_close(compare(*problem(**kw)))

# precision='bf16' rounds the plane copy and both operands of every decoder product to bf16 (8 significant bits, unit
# roundoff u = 2**-9 = 2e-3) and keeps sums, compositing and gradient accumulation in fp32. Relative to the largest
# element, outputs and gradients measured within 4.3e-3 of float64 on an H100 (1000 rays x 97 samples, C = 24) and
# within 1.4e-2 on these tiny, large-weight interpreter problems (rounding to nearest, as the GPU does; 2.1e-2 when the
# interpreter path truncated): BF16_TOL = 3e-2 is about 15 u. A bug (a wrong corner,
# a lost gradient term) shows as an error of order one; and bf16 must be measurably less exact than fp32 (> 1e-4),
# or it did not run.
BF16_TOL = 3e-2

def assert_bf16(errs):
    ours, _ = errs
    assert max(ours.values()) < BF16_TOL, f'bf16 relative errors against float64: {ours}'
    assert max(ours.values()) > 1e-4, f'bf16 as exact as fp32: did it run in bf16? {ours}'

@cpu_only
@pytest.mark.parametrize('kw', [dict(), dict(C=16, hidden=16, R=8, S=5), dict(B=3, N=7, S=9, C=3, hidden=5, R=2)])
def test_interpreter_bf16_within_bound(kw):
    assert_bf16(compare(*problem(**kw), precision='bf16'))

@cpu_only
@pytest.mark.parametrize('grad_planes,grad_dec,return_weights', [(True, False, False), (False, True, False), (True, True, False)])
def test_interpreter_partial_gradients(grad_planes, grad_dec, return_weights):
    assert_close(compare(*problem(seed=3), return_weights=return_weights, grad_planes=grad_planes, grad_dec=grad_dec))

@cpu_only
@pytest.mark.parametrize('bg', [1.0, 0.25, (0.1, 0.5, 0.9)])
def test_background_forms(bg):
    *args, _ = problem(seed=4)
    assert_close(compare(*args, torch.tensor(bg) if isinstance(bg, tuple) else bg, return_weights=False, grad_planes=False, grad_dec=False))

@cpu_only
def test_low_precision_planes_keep_their_dtype():
    planes, dec, *rest = problem(seed=5)
    p = planes.bfloat16().requires_grad_()
    out = render_samples_triton(p, dec, *rest)
    out['rgb'].sum().backward()
    assert out['rgb'].dtype == torch.float32 and p.grad.dtype == torch.bfloat16
    ref = reference(p.detach().float(), dec, *rest)
    assert (out['rgb'] - ref['rgb']).abs().max() < 1e-5

def test_no_grad_to_rays_depths_or_background():
    planes, dec, rays_o, rays_d, t, near, far, bg = problem()
    for i, name in enumerate(['rays_o', 'rays_d', 't', 'near', 'far', 'background']):
        args = [rays_o, rays_d, t, near, far, bg]
        args[i] = args[i].clone().requires_grad_()
        with pytest.raises(ValueError, match=f'{name} requires grad'): render_samples_triton(planes, dec, *args)

def test_bad_shapes_and_decoder():
    planes, dec, rays_o, rays_d, t, near, far, bg = problem()
    with pytest.raises(ValueError, match='t must have shape'): render_samples_triton(planes, dec, rays_o, rays_d, t[:, :4], near, far, bg)
    with pytest.raises(ValueError, match='planes must have shape'): render_samples_triton(planes[:, :2], dec, rays_o, rays_d, t, near, far, bg)
    with pytest.raises(ValueError, match='decoder must map C=5'): render_samples_triton(planes, TriplaneDecoder(4, 8), rays_o, rays_d, t, near, far, bg)
    with pytest.raises(ValueError, match='background must be'): render_samples_triton(planes, dec, rays_o, rays_d, t, near, far, torch.ones(4))
    with pytest.raises(TypeError, match='decoder must be a TriplaneDecoder'): render_samples_triton(planes, torch.nn.Linear(5, 4), rays_o, rays_d, t, near, far, bg)


@cuda_only
@pytest.mark.parametrize('kw', [dict(B=2, N=500, S=97, C=24, R=37, hidden=64), dict(B=3, N=333, S=64, C=32, R=128, hidden=64),
                                dict(B=1, N=1000, S=97, C=7, R=16, hidden=20)])
def test_gpu_matches_reference(kw):
    assert_close(compare(*problem(**kw, device='cuda', scale=0.3)), floor=1e-4)

@cuda_only
@pytest.mark.parametrize('kw', [dict(B=2, N=500, S=97, C=24, R=37, hidden=64), dict(B=3, N=333, S=64, C=32, R=128, hidden=64),
                                dict(B=1, N=1000, S=97, C=7, R=16, hidden=20)])
def test_gpu_bf16_within_bound(kw):
    assert_bf16(compare(*problem(**kw, device='cuda', scale=0.3), precision='bf16'))

def test_bad_precision_and_sizes():
    planes, dec, rays_o, rays_d, t, near, far, bg = problem(device='cuda' if CUDA else 'cpu')
    with pytest.raises(ValueError, match="precision must be one of"): render_samples_triton(planes, dec, rays_o, rays_d, t, near, far, bg, precision='fp16')
    big = planes[:, :, :, :1, :1].expand(2, 3, 5, 12000, 12000) # 3 x 12000^2 x 5 values per image: int32 offsets overflow
    with pytest.raises(ValueError, match='fewer than 2..31 values'): render_samples_triton(big, dec, rays_o, rays_d, t, near, far, bg)
    from renderdiffusion_nb.rendering import render_rays
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16'"): render_rays(planes, dec, rays_o, rays_d, near, far, precision='tf32')

@cuda_only
def test_gpu_cpu_inputs_refused():
    planes, dec, *rest = problem()
    with pytest.raises(RuntimeError, match='runs on CUDA tensors'): render_samples_triton(planes, dec, *rest)
    from renderdiffusion_nb.render_triton import importance_samples_triton
    t, w, near, far = importance_problem(1, 4, 5)
    with pytest.raises(RuntimeError, match='runs on CUDA tensors'): importance_samples_triton(t, w, near, far, 3)

@cuda_only
def test_gpu_training_steps_match():
    "Forty Adam steps fitting planes and decoder to a target: both backends give the same losses."
    planes, dec, rays_o, rays_d, t, near, far, bg = problem(B=2, N=256, S=32, C=8, R=16, hidden=16, device='cuda', scale=0.3)
    target = torch.rand(2, 256, 3, device='cuda', generator=torch.Generator(device='cuda').manual_seed(0))
    losses = {}
    for name, fn in (('torch', reference), ('triton', render_samples_triton), ('bf16', functools.partial(render_samples_triton, precision='bf16'))):
        p, d = planes.clone().requires_grad_(), copy.deepcopy(dec)
        opt = torch.optim.Adam([p, *d.parameters()], lr=1e-2)
        losses[name] = []
        for _ in range(40):
            loss = F.mse_loss(fn(p, d, rays_o, rays_d, t, near, far, bg)['rgb'], target)
            opt.zero_grad(); loss.backward(); opt.step()
            losses[name].append(loss.item())
    a, b, c = (torch.tensor(losses[k]) for k in ('torch', 'triton', 'bf16'))
    assert ((a - b).abs() / a).max() < 1e-3, (a, b)
    assert ((a - c).abs() / a).max() < 2e-2, (a, c) # bf16 products: the same curve within bf16's rounding


@cpu_only
def test_render_rays_dispatch_matches_reference():
    "render_rays(backend='triton') (coarse pass, importance samples, fine pass) gives the reference's rgb, depth and opacity."
    from renderdiffusion_nb.rendering import render_rays
    planes, dec, rays_o, rays_d, t, near, far, bg = problem(B=2, N=12, C=6, R=8, hidden=16, seed=7, scale=0.3)
    kw = dict(n_coarse=8, n_fine=8, background=bg)
    ref = render_rays(planes, dec, rays_o, rays_d, near, far, backend='torch', **kw)
    out = render_rays(planes, dec, rays_o, rays_d, near, far, backend='triton', **kw)
    for k in ('rgb', 'depth', 'opacity'): assert (out[k] - ref[k]).abs().max() < 1e-4, k
    out = render_rays(planes, dec, rays_o, rays_d, near, far, backend='triton', precision='bf16', **kw) # one bf16 plane copy for both passes
    for k in ('rgb', 'opacity'): assert (out[k] - ref[k]).abs().max() < BF16_TOL, k
    assert ((out['depth'] - ref['depth']).abs() / (far - near).clamp_min(1e-6)).max() < BF16_TOL


BAD_VALUES = { # what to spoil in render_rays' inputs, and the message expected
    'nan planes': (lambda a: a['planes'].view(-1)[5].fill_(float('nan')), 'planes contains NaN'),
    'inf rays_o': (lambda a: a['rays_o'][1, 3, 0].fill_(float('inf')), 'rays_o contains NaN'),
    'nan rays_d': (lambda a: a['rays_d'][0, 2, 1].fill_(float('nan')), 'rays_d contains NaN'),
    'nan near': (lambda a: a['near'][0, 4].fill_(float('nan')), 'near contains NaN'),
    'near > far': (lambda a: a['near'][1, 1].fill_(9.), 'near must be <= far'),
    'background': (lambda a: a['background'][1, 2].fill_(2.), 'background must be in'),
}

@pytest.mark.parametrize('bad', list(BAD_VALUES))
def test_render_rays_triton_bad_values_raise_after_a_safe_run(bad):
    "With the Triton backend the value checks are read after the kernels ran on the bad values: they must stay in bounds, then raise."
    from renderdiffusion_nb.rendering import render_rays
    planes, dec, rays_o, rays_d, t, near, far, bg = problem(B=2, N=12, C=6, R=8, hidden=16, seed=7, scale=0.3, device='cuda' if CUDA else 'cpu')
    a = dict(planes=planes, rays_o=rays_o, rays_d=rays_d, near=near, far=far, background=bg)
    spoil, message = BAD_VALUES[bad]
    spoil(a)
    with pytest.raises(ValueError, match=message):
        render_rays(a['planes'], dec, a['rays_o'], a['rays_d'], a['near'], a['far'], n_coarse=8, n_fine=8, background=a['background'], backend='triton')
    if CUDA: torch.cuda.synchronize() # no illegal memory access behind the error


@cuda_only
def test_render_rays_triton_never_waits_for_the_whole_stream():
    "A Triton render step reads its value checks back without a stream or device synchronisation (it waits on an event behind them)."
    import warnings
    from renderdiffusion_nb.rendering import render_rays
    planes, dec, rays_o, rays_d, t, near, far, bg = problem(B=2, N=300, C=8, R=16, hidden=16, seed=7, scale=0.3, device='cuda')
    planes.requires_grad_()
    kw = dict(n_coarse=16, n_fine=16, background=bg, backend='triton', jitter=True)
    ref = render_rays(planes, dec, rays_o, rays_d, near, far, **kw, generator=torch.Generator('cuda').manual_seed(0)) # compile first
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try: out = render_rays(planes, dec, rays_o, rays_d, near, far, **kw, generator=torch.Generator('cuda').manual_seed(0))
        finally: torch.cuda.set_sync_debug_mode('default')
    syncs = [str(w.message) for w in caught if 'called a synchronizing' in str(w.message)]
    assert not syncs, syncs
    for k in ('rgb', 'depth', 'opacity'): assert torch.equal(out[k], ref[k]), k


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter switch matters only without a GPU")
def test_interpreter_survives_torch_importing_triton_first():
    "Building an optimizer makes PyTorch import triton; with the interpreter switched on in the environment (the user's or the test's), the Triton path runs on the CPU all the same."
    import os, subprocess, sys, textwrap
    code = textwrap.dedent('''
        import torch
        from renderdiffusion_nb.triplane import sphere_triplane
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])
        from renderdiffusion_nb.rendering import render_rays
        from renderdiffusion_nb.cameras import sample_cameras, get_rays, ray_box_intersect
        planes, dec = sphere_triplane()
        o, d = get_rays(sample_cameras(1, 4, 4, generator=torch.Generator().manual_seed(0)))
        n, f = ray_box_intersect(o, d)
        a, b = (render_rays(planes, dec, o, d, n, f, n_coarse=4, n_fine=4, backend=k)['rgb'] for k in ('torch', 'triton'))
        assert (a - b).abs().max() < 1e-5
    ''')
    env = {**os.environ, 'TRITON_INTERPRET': '1'} # as a CPU user sets it; importing the library does not change the environment
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]


def test_importing_the_library_leaves_the_environment_alone():
    "No module of the library sets TRITON_INTERPRET (or anything else) in the process environment when imported."
    import subprocess, sys
    code = ("import os, json; before = dict(os.environ); import renderdiffusion_nb.train, renderdiffusion_nb.rendering, "
            "renderdiffusion_nb.render_triton, renderdiffusion_nb.demo; print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))")
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == '[]', (r.stdout[-500:], r.stderr[-2000:])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter matters only without a GPU")
def test_interpreter_off_is_a_clear_error():
    "With the interpreter switched off on a machine without a GPU, the Triton functions say what to set (not Triton's '0 active drivers')."
    import os, subprocess, sys, textwrap
    code = textwrap.dedent('''
        import torch
        from renderdiffusion_nb.render_triton import importance_samples_triton
        t = torch.linspace(0, 1, 4).expand(1, 2, 4).contiguous()
        try: importance_samples_triton(t, torch.ones(1, 2, 4), torch.zeros(1, 2), torch.ones(1, 2), 2)
        except RuntimeError as e: assert 'TRITON_INTERPRET=1' in str(e), e
        else: raise AssertionError('no error')
    ''')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, env=os.environ | {'TRITON_INTERPRET': '0'})
    assert r.returncode == 0, r.stderr[-2000:]


def test_float64_inputs_give_float64_outputs_and_second_backward_is_refused():
    planes, dec, *rest = problem(seed=6, device='cuda' if CUDA else 'cpu') # CPU tensors are refused where a GPU exists
    p = planes.double().requires_grad_()
    out = render_samples_triton(p, dec.double(), *(x.double() if torch.is_tensor(x) and x.is_floating_point() else x for x in rest))
    assert all(v.dtype == torch.float64 for v in out.values())
    out['rgb'].sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match='second backward'): out['rgb'].sum().backward()


def importance_problem(B=2, N=37, S=7, seed=0, device='cpu'):
    "Coarse depths and weights: an empty ray, a ray with no weight, a ray with all of it in one bin."
    from renderdiffusion_nb.render import stratified_samples
    g = torch.Generator().manual_seed(seed)
    near = torch.rand(B, N, generator=g); far = near + 0.5 + torch.rand(B, N, generator=g)
    far[0, 0] = near[0, 0]
    t = stratified_samples(near, far, S, jitter=True, generator=g)
    w = torch.rand(B, N, S, generator=g) ** 4
    w[0, 1] = 0; w[-1, 2] = 0; w[-1, 2, S // 2] = 5.0
    return [x.to(device) for x in (t, w, near, far)]


def check_importance(device, B, N, S, n, jitter, seed=0):
    from renderdiffusion_nb.render import importance_samples
    from renderdiffusion_nb.render_triton import importance_samples_triton
    t, w, near, far = importance_problem(B, N, S, seed, device)
    gen = lambda: torch.Generator(device=device).manual_seed(5)
    ref = importance_samples(t, w, near, far, n, jitter, gen())
    got = importance_samples_triton(t, w, near, far, n, jitter, gen())
    assert got.shape == (B, N, S + n) and got.dtype == t.dtype
    assert torch.isfinite(got).all(), 'unwritten (NaN) slots'
    assert (got[..., 1:] >= got[..., :-1]).all(), 'not sorted'
    # Inverse-CDF sampling is ill-conditioned where the density is small (dt/du = 1/pdf): fp32 cumulative sums taken in
    # another order (the GPU's parallel scan, the kernel's running sum over up to 97 bins) differ by some 1e-6 to 1e-5,
    # which moves a sample in a nearly empty bin by a visible fraction of that bin (measured on an H100: 2.6e-3 of the
    # ray). So compare where the samples sit in the float64 CDF of the coarse weights (well conditioned), and bound t loosely.
    F64 = lambda x: cdf64(t, w, near, far, x)
    err_u = (F64(got) - F64(ref)).abs().max().item()
    err_t = ((got - ref).abs() / (far - near).clamp_min(1e-6)[..., None]).max().item()
    assert err_u < 1e-4 and err_t < 1e-2, (err_u, err_t)


def cdf64(t, w, near, far, x):
    "The piecewise-linear CDF (float64) of the coarse weights on the coarse bins, at depths x (B, N, M)."
    t, w, near, far, x = (v.double() for v in (t, w, near, far, x))
    b = torch.cat([near[..., None], (t[..., 1:] + t[..., :-1]) / 2, far[..., None]], -1)
    p = w.clamp_min(0) + 1e-5
    c = torch.cat([torch.zeros_like(p[..., :1]), torch.cumsum(p / p.sum(-1, keepdim=True), -1)], -1)
    S = w.shape[-1]
    hi = torch.searchsorted(b.contiguous(), x.contiguous(), right=True).clamp(1, S); lo = hi - 1
    b0, b1, c0, c1 = b.gather(-1, lo), b.gather(-1, hi), c.gather(-1, lo), c.gather(-1, hi)
    return c0 + ((x - b0) / (b1 - b0).clamp_min(1e-300)).clamp(0, 1) * (c1 - c0)


@cpu_only
@pytest.mark.parametrize('B,N,S,n,jitter', [(2, 37, 7, 5, False), (2, 37, 7, 5, True), (1, 3, 16, 24, True), (2, 5, 3, 1, False), (1, 4, 1, 3, True),
                                            (1, 3, 70, 5, True)])
def test_importance_samples_interpreter(B, N, S, n, jitter): # S = 70: the total weight in two tiles of 64 bins
    check_importance('cpu', B, N, S, n, jitter)


@cuda_only
@pytest.mark.parametrize('jitter', [False, True])
def test_importance_samples_gpu(jitter):
    check_importance('cuda', 3, 333, 97, 61, jitter)   # 999 rays, sizes that fill no block
    check_importance('cuda', 32, 4096, 64, 64, jitter) # the training configuration


def test_importance_samples_bad_input():
    from renderdiffusion_nb.render_triton import importance_samples_triton
    t, w, near, far = importance_problem(1, 4, 5)
    with pytest.raises(ValueError, match='positive int'): importance_samples_triton(t, w, near, far, 0)
    with pytest.raises(ValueError, match='weights'): importance_samples_triton(t, w[..., :3], near, far, 4)


@pytest.mark.parametrize('P,M,K', [(2, 5, 77), (3, 130, 24), (1, 70, 3)])
def test_transpose_kernel(P, M, K):
    "The plane gradient's layout copy: (P, M, K) -> (P, K, M) with a dtype change, every element, sizes that fill no tile."
    import triton
    from renderdiffusion_nb.render_triton import _transpose, _transpose_kernel
    dev = 'cuda' if CUDA else 'cpu'
    x = torch.randn(P, M, K, generator=torch.Generator().manual_seed(P * M * K)).to(dev)
    for dtype in (torch.float32, torch.bfloat16):
        out = torch.full((P, K, M), float('nan'), dtype=dtype, device=dev)
        bm, bk = min(64, triton.next_power_of_2(M)), min(64, triton.next_power_of_2(K))
        _transpose_kernel[(triton.cdiv(M, bm) * triton.cdiv(K, bk), P)](x, out, M, K, BLOCK_M=bm, BLOCK_K=bk)
        want = x.transpose(1, 2)
        if dtype == torch.float32 or CUDA: assert torch.equal(out, want.to(dtype))
        else: assert ((out.float() - want).abs() <= want.abs() * 2 ** -7).all() # the interpreter rounds to bf16 toward zero
        assert torch.equal(_transpose(x, dtype), want.to(dtype))


DEV = 'cuda' if CUDA else 'cpu'

@pytest.mark.parametrize('n,jitter', [(7, False), (7, True), (97, True), (64, False)])
def test_coarse_kernel_makes_stratified_depths_bit_for_bit(n, jitter):
    "The coarse kernel's own depths (STRAT) are stratified_samples' numbers exactly, with the same uniform draws (GPU: torch's fp32 reciprocal)."
    from renderdiffusion_nb import render_triton as rt
    from renderdiffusion_nb.render import stratified_samples
    planes, dec, rays_o, rays_d, t, near, far, bg = problem(B=2, N=37, device=DEV)
    near = near * torch.linspace(0.3, 1.7, 37, device=DEV) # bounds that make every rounding step count
    g = lambda: torch.Generator(DEV).manual_seed(4)
    want = stratified_samples(near, far, n, jitter, g())
    u = torch.rand(2, 37, n, generator=g(), device=DEV) if jitter else None
    got = torch.full((2, 37, n), float('nan'), device=DEV)
    dec32 = [rt._f32(x) for x in (dec.fc1.weight, dec.fc1.bias, dec.fc2.weight, dec.fc2.bias)]
    w = rt._fwd_launch(rt._planes_copy(planes), dec32, [rays_o, rays_d, got, near, far, got], 37, n, float(dec.density_shift), True, False,
                       rt._launch_config(planes.device, 37), 2 if jitter else 1, u)[3]
    assert torch.equal(got, want), (got - want).abs().max()
    ref = reference(planes, dec, rays_o, rays_d, want, near, far, bg, return_weights=True)['weights'] # and the weights at those depths
    assert (w - ref).abs().max() < 1e-5


@pytest.mark.parametrize('n_fine,jitter,precision', [(0, True, 'fp32'), (5, False, 'fp32'), (5, True, 'fp32'), (6, True, 'bf16')])
def test_render_rays_triton_matches_reference(n_fine, jitter, precision):
    "render_rays' Triton path against the reference with the same generator: depths, weights, outputs and gradients (CPU interpreter or GPU)."
    from renderdiffusion_nb.rendering import render_rays
    planes, dec, rays_o, rays_d, t, near, far, bg = problem(B=2, N=40, C=6, R=8, hidden=16, seed=3, scale=0.3, device=DEV)
    outs, grads = {}, {}
    for backend in ('torch', 'triton'):
        p, d = planes.clone().requires_grad_(), copy.deepcopy(dec)
        outs[backend] = render_rays(p, d, rays_o, rays_d, near, far, n_coarse=7, n_fine=n_fine, background=bg, jitter=jitter,
                                    generator=torch.Generator(DEV).manual_seed(1), return_weights=True, backend=backend, precision=precision)
        o = outs[backend]
        (o['rgb'].square().sum() + o['depth'].sum() + o['opacity'].sum()).backward()
        grads[backend] = [p.grad] + [q.grad for q in d.parameters()]
    ref, out = outs['torch'], outs['triton']
    if n_fine == 0: assert torch.equal(out['t'], ref['t']) # stratified_samples' depths (no coarse pass)
    else: # the coarse kernel's own depths are among the fine pass's, bit for bit; the fine depths agree up to rounding
        from renderdiffusion_nb.render import stratified_samples
        tc = stratified_samples(near, far, 7, jitter, torch.Generator(DEV).manual_seed(1)) # the same first draw
        assert (out['t'][..., :, None] == tc[..., None, :]).any(-2).all()
        assert ((out['t'] - ref['t']).abs() / (far - near)[..., None].clamp_min(1e-6)).max() < (1e-5 if precision == 'fp32' else BF16_TOL)
    tol = 1e-4 if precision == 'fp32' else BF16_TOL
    for k in ('rgb', 'opacity', 'weights'): assert (out[k] - ref[k]).abs().max() < tol, k
    assert ((out['depth'] - ref['depth']).abs() / (far - near).clamp_min(1e-6)).max() < tol
    for a, b in zip(grads['triton'], grads['torch']): assert ((a - b).abs().max() / b.abs().max()) < (1e-4 if precision == 'fp32' else 3 * BF16_TOL)


@pytest.mark.parametrize('background', ['number', '(3,)', '(B, 3)'])
def test_render_rays_triton_background_forms_with_value_checks(background):
    "Every background form through render_rays' Triton path with its value checks on (on a GPU they run on a side stream)."
    from renderdiffusion_nb.rendering import render_rays
    planes, dec, rays_o, rays_d, t, near, far, bg = problem(B=2, N=40, C=6, R=8, hidden=16, seed=3, scale=0.3, device=DEV)
    bg = {'number': 0.25, '(3,)': bg[0], '(B, 3)': bg}[background]
    kw = dict(n_coarse=7, n_fine=5, background=bg, generator=torch.Generator(DEV).manual_seed(1), check_values=True)
    ref = render_rays(planes, dec, rays_o, rays_d, near, far, backend='torch', **kw)
    kw['generator'] = torch.Generator(DEV).manual_seed(1)
    out = render_rays(planes, dec, rays_o, rays_d, near, far, backend='triton', **kw)
    for k in ('rgb', 'depth', 'opacity'): assert (out[k] - ref[k]).abs().max() < 1e-4, k
