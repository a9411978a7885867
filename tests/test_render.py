"The reference renderer: closed forms, an independent loop implementation, gradients, sampling, chunking, bad inputs."
import math
import sys

import pytest
import torch
import torch.nn as nn

from renderdiffusion_nb.cameras import sample_cameras
from renderdiffusion_nb.render import render_samples, sample_pdf, stratified_samples
from renderdiffusion_nb.rendering import render_image, render_rays
from renderdiffusion_nb.triplane import TriplaneDecoder, sample_triplane, sphere_triplane


def constant_decoder(C, sigma, colour=0.5, dtype=torch.float32):
    "Density `sigma` and colour `colour` everywhere, through the real decoder's activations."
    dec = TriplaneDecoder(C, hidden=8).to(dtype)
    with torch.no_grad():
        dec.fc2.weight.zero_()
        dec.fc2.bias[0] = math.log(math.expm1(sigma)) - dec.density_shift
        dec.fc2.bias[1:] = math.log(colour / (1 - colour))
    return dec


class ZeroDensity(nn.Module):
    "Density exactly zero, colour red: nothing should show."
    def __init__(self, C): super().__init__(); self.n_features = C
    def forward(self, f): return f[..., 0] * 0, torch.tensor([1., 0., 0.]).expand(*f.shape[:-1], 3)


class Shell(nn.Module):
    "Reads the sphere triplane's radial channel: density `sigma` where |distance - radius| < half_width, else 0."
    def __init__(self, C, radius=0.5, half_width=0.02, sigma=10.):
        super().__init__(); self.n_features, self.radius, self.half_width, self.sigma = C, radius, half_width, sigma
    def forward(self, f):
        dist = (1.5 * (1 - f[..., 0])).clamp_min(0).sqrt() # channel 0 is 1 - 2/3 |x|^2
        return self.sigma * ((dist - self.radius).abs() < self.half_width).to(f.dtype), torch.full((*f.shape[:-1], 3), 0.5)


def random_rays(B, N, g, dtype=torch.float32):
    "Rays from outside the box towards random points in it; near/far clipped to [0.5, 3.5] along each."
    o = torch.randn(B, N, 3, generator=g, dtype=dtype)
    o = 2.5 * o / o.norm(dim=-1, keepdim=True)
    d = torch.rand(B, N, 3, generator=g, dtype=dtype) - 0.5 - o
    d = d / d.norm(dim=-1, keepdim=True)
    near = 0.5 + torch.rand(B, N, generator=g, dtype=dtype)
    far = near + 2 * torch.rand(B, N, generator=g, dtype=dtype)
    return o, d, near, far


def sorted_t(near, far, S, g):
    u = torch.rand(*near.shape, S, generator=g, dtype=near.dtype).sort(-1).values
    return near[..., None] + (far - near)[..., None] * u


def loop_reference(planes, decoder, rays_o, rays_d, t, near, far, bg):
    "The compositing written as a loop over samples, one ray at a time: an independent implementation."
    B, N, S = t.shape
    pts = rays_o[:, :, None] + t[..., None] * rays_d[:, :, None]
    sigma, rgb = decoder(sample_triplane(planes, pts.reshape(B, N * S, 3)))
    sigma, rgb = sigma.reshape(B, N, S), rgb.reshape(B, N, S, 3)
    out_rgb, out_depth, out_op, out_w = torch.zeros(B, N, 3, dtype=t.dtype), torch.zeros(B, N, dtype=t.dtype), torch.zeros(B, N, dtype=t.dtype), torch.zeros(B, N, S, dtype=t.dtype)
    for b in range(B):
        for n in range(N):
            T, acc_c, acc_t, acc_w = 1.0, torch.zeros(3, dtype=t.dtype), 0.0, 0.0
            for i in range(S):
                lo = near[b, n] if i == 0 else (t[b, n, i - 1] + t[b, n, i]) / 2
                hi = far[b, n] if i == S - 1 else (t[b, n, i] + t[b, n, i + 1]) / 2
                a = 1 - torch.exp(-sigma[b, n, i] * (hi - lo))
                w = T * a
                out_w[b, n, i] = w
                acc_c, acc_t, acc_w = acc_c + w * rgb[b, n, i], acc_t + w * t[b, n, i], acc_w + w
                T = T * torch.exp(-sigma[b, n, i] * (hi - lo))
            out_rgb[b, n] = acc_c + (1 - acc_w) * bg[b]
            out_depth[b, n] = acc_t / max(float(acc_w), 1e-6)
            out_op[b, n] = acc_w
    return out_rgb, out_depth, out_op, out_w


def test_matches_loop_reference():
    g = torch.Generator().manual_seed(0)
    B, N, S, C = 2, 5, 12, 4
    torch.manual_seed(0)
    planes = torch.randn(B, 3, C, 8, 8, generator=g, dtype=torch.float64)
    dec = TriplaneDecoder(C, density_shift=1.).double() # dense enough for occlusion to matter
    with torch.no_grad(): dec.fc2.weight.mul_(3); dec.fc2.bias.zero_() # 3x the standard scale: dense, varied densities
    o, d, near, far = random_rays(B, N, g, torch.float64)
    t = sorted_t(near, far, S, g)
    bg = torch.rand(B, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = render_samples(planes, dec, o, d, t, near, far, bg, return_weights=True)
        rgb, depth, op, w = loop_reference(planes, dec, o, d, t, near, far, bg)
    assert op.max() > 0.5 # the case is not trivially transparent
    torch.testing.assert_close(out['rgb'], rgb); torch.testing.assert_close(out['depth'], depth)
    torch.testing.assert_close(out['opacity'], op); torch.testing.assert_close(out['weights'], w)


@pytest.mark.parametrize('sigma', [0.01, 1.0, 7.0])
def test_constant_density_closed_form(sigma):
    g = torch.Generator().manual_seed(1)
    B, N, S, C = 2, 50, 9, 4
    planes = torch.randn(B, 3, C, 8, 8, generator=g)
    o, d, near, far = random_rays(B, N, g)
    out = render_samples(planes, constant_decoder(C, sigma, 0.25), o, d, sorted_t(near, far, S, g), near, far, background=1.0)
    expected = 1 - torch.exp(-sigma * (far - near))
    torch.testing.assert_close(out['opacity'], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out['rgb'], (0.25 * expected + 1 - expected)[..., None].expand(B, N, 3), atol=1e-5, rtol=1e-5)
    # also through the samplers, jittered
    out2 = render_rays(planes, constant_decoder(C, sigma, 0.25), o, d, near, far, n_coarse=7, n_fine=5, jitter=True, generator=g)
    torch.testing.assert_close(out2['opacity'], expected, atol=1e-5, rtol=1e-5)


def test_zero_density_and_missed_rays_show_background():
    g = torch.Generator().manual_seed(2)
    B, N, C = 2, 6, 4
    planes = torch.randn(B, 3, C, 8, 8, generator=g)
    o, d, near, far = random_rays(B, N, g)
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]])
    out = render_rays(planes, ZeroDensity(C), o, d, near, far, n_coarse=8, n_fine=8, background=bg)
    assert torch.equal(out['rgb'], bg[:, None].expand(B, N, 3)) and torch.equal(out['opacity'], torch.zeros(B, N))
    dense = constant_decoder(C, 50.)
    out = render_rays(planes, dense, o, d, near, near, n_coarse=8, n_fine=8, background=bg) # near == far: a miss
    torch.testing.assert_close(out['rgb'], bg[:, None].expand(B, N, 3))


def test_weights_and_transmittance():
    g = torch.Generator().manual_seed(3)
    B, N, C = 2, 64, 8
    torch.manual_seed(3)
    planes = torch.randn(B, 3, C, 16, 16, generator=g)
    dec = TriplaneDecoder(C, density_shift=4.)
    with torch.no_grad(): dec.fc2.weight.mul_(3); dec.fc2.bias.zero_() # 3x the standard scale: dense, varied densities
    o, d, near, far = random_rays(B, N, g)
    out = render_rays(planes, dec, o, d, near, far, n_coarse=16, n_fine=16, jitter=True, generator=g, return_weights=True)
    w = out['weights']
    assert (w >= 0).all() and (w.sum(-1) <= 1 + 1e-6).all() and out['opacity'].max() > 0.9
    trans = 1 - torch.cat([torch.zeros_like(w[..., :1]), w.cumsum(-1)[..., :-1]], -1) # T_i = 1 - sum_{j<i} w_j
    assert (trans[..., 1:] <= trans[..., :-1] + 1e-6).all() and (trans >= -1e-6).all()
    assert (out['t'][..., 1:] >= out['t'][..., :-1]).all() and out['t'].shape == (B, N, 32)
    assert ((out['t'] >= near[..., None]) & (out['t'] <= far[..., None])).all()


def test_depth_of_an_opaque_wall():
    "A wall at x = w: density 1e3 for x > w. Depth is where the ray meets it, whatever the transparency in front."
    class Wall(nn.Module):
        n_features = 4
        def forward(self, f): return 1e3 * (f[..., 1] > 0.1).float(), torch.full((*f.shape[:-1], 3), 0.5)
    planes, _ = sphere_triplane(n_features=4, resolution=256) # channel 1 holds 2/3 x
    o = torch.tensor([[[-1.5, 0., 0.]]]).expand(1, 3, 3).contiguous()
    d = torch.tensor([[[1., 0., 0.]]]).expand(1, 3, 3).contiguous()
    out = render_rays(planes, Wall(), o, d, torch.full((1, 3), 0.5), torch.full((1, 3), 2.5), n_coarse=64, n_fine=64)
    torch.testing.assert_close(out['depth'], torch.full((1, 3), 1.5 + 0.15), atol=0.02, rtol=0)


def test_gradcheck_render_samples():
    g = torch.Generator().manual_seed(4)
    B, N, S, C = 1, 3, 5, 2
    torch.manual_seed(4)
    dec = TriplaneDecoder(C, hidden=4).double()
    with torch.no_grad(): dec.fc2.weight.normal_(0, 1.0, generator=g)
    planes = torch.randn(B, 3, C, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    o, d, near, far = random_rays(B, N, g, torch.float64)
    o, d = o * 0.5, d # origins inside the box keep points away from the box faces
    t = sorted_t(near * 0.2, far * 0.2, S, g)
    near, far = near * 0.2 - 0.05, far * 0.2 + 0.05
    bg = torch.rand(B, 3, generator=g, dtype=torch.float64)
    inputs = [x.detach().requires_grad_() for x in (planes, o, d, t, near, far, bg)]
    names = [n for n, _ in dec.named_parameters()]
    params = [p.detach().requires_grad_() for p in dec.parameters()]
    def f(planes, o, d, t, near, far, bg, *ps):
        decoder = lambda feat: torch.func.functional_call(dec, dict(zip(names, ps)), (feat,))
        out = render_samples(planes, decoder, o, d, t, near, far, bg)
        return out['rgb'], out['depth'], out['opacity']
    assert torch.autograd.gradcheck(f, (*inputs, *params))


def test_gradcheck_render_rays_and_no_gradient_through_sampling():
    g = torch.Generator().manual_seed(5)
    B, N, C = 1, 4, 2
    torch.manual_seed(5)
    dec = TriplaneDecoder(C, hidden=4).double()
    with torch.no_grad(): dec.fc2.weight.normal_(0, 1.0, generator=g)
    planes = torch.randn(B, 3, C, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    o = torch.zeros(B, N, 3, dtype=torch.float64)
    d = torch.randn(B, N, 3, generator=g, dtype=torch.float64); d = d / d.norm(dim=-1, keepdim=True)
    near, far = torch.zeros(B, N, dtype=torch.float64), torch.full((B, N), 0.9, dtype=torch.float64)
    f = lambda p: render_rays(p, dec, o, d, near, far, n_coarse=6, n_fine=0)['rgb']
    assert torch.autograd.gradcheck(f, (planes,))
    # with importance samples the sample positions are constants: the gradient is that of render_samples at them
    out = render_rays(planes, dec, o, d, near, far, n_coarse=6, n_fine=6, return_weights=True)
    assert not out['t'].requires_grad
    g1, = torch.autograd.grad(out['rgb'].sum(), planes)
    g2, = torch.autograd.grad(render_samples(planes, dec, o, d, out['t'], near, far)['rgb'].sum(), planes)
    torch.testing.assert_close(g1, g2)


def test_importance_samples_concentrate_on_a_thin_shell():
    planes, _ = sphere_triplane(n_features=4, resolution=128)
    shell = Shell(4, radius=0.5, half_width=0.04, sigma=5.) # thicker than the coarse spacing: always seen
    N = 32
    g = torch.Generator().manual_seed(6)
    off = (torch.rand(1, N, 2, generator=g) - 0.5) * 0.6 # rays along x, offset in (y, z) by up to 0.3
    o = torch.cat([torch.full((1, N, 1), -1.), off], -1)
    d = torch.tensor([1., 0., 0.]).expand(1, N, 3)
    near, far = torch.zeros(1, N), torch.full((1, N), 2.)
    n_coarse, n_fine = 32, 64
    coarse = render_rays(planes, shell, o, d, near, far, n_coarse=n_coarse, n_fine=0, return_weights=True)
    both = render_rays(planes, shell, o, d, near, far, n_coarse=n_coarse, n_fine=n_fine, return_weights=True)
    assert coarse['opacity'].min() > 0.2 # every ray sees the shell
    rho2 = (off**2).sum(-1)
    cross = torch.stack([1 - (0.25 - rho2).sqrt(), 1 + (0.25 - rho2).sqrt()], -1) # (1, N, 2) entry and exit
    fine = torch.stack([both['t'][0, n][~torch.isin(both['t'][0, n], coarse['t'][0, n])] for n in range(N)])[None]
    dist = (fine[..., None] - cross[:, :, None]).abs().min(-1).values # distance to the nearest crossing
    bin_width = 2 / n_coarse
    assert (dist < 1.5 * bin_width).float().mean() > 0.99 # coarse sampling would put ~10% there
    assert fine.shape[-1] == n_fine


def test_sample_pdf_follows_weights():
    bounds = torch.linspace(0, 4, 5).expand(1, 1, 5)
    w = torch.tensor([[[1., 0., 3., 0.]]])
    t = sample_pdf(bounds, w, 400)
    assert abs((t < 1).float().mean() - 0.25) < 0.01 and abs(((t > 2) & (t < 3)).float().mean() - 0.75) < 0.01
    tj = sample_pdf(bounds, w, 400, jitter=True, generator=torch.Generator().manual_seed(0))
    assert abs((tj < 1).float().mean() - 0.25) < 0.01 and not torch.equal(t, tj)
    assert (t[..., 1:] >= t[..., :-1]).all()
    t0 = sample_pdf(bounds, torch.zeros(1, 1, 4), 8) # an empty ray: evenly spread samples
    torch.testing.assert_close(t0, (torch.arange(8) + 0.5).reshape(1, 1, 8) / 2, atol=1e-4, rtol=0)


def test_jitter_is_seeded_and_evaluation_is_deterministic():
    planes, dec = sphere_triplane(n_features=4, resolution=32)
    g = torch.Generator().manual_seed(7)
    o, d, near, far = random_rays(1, 16, g)
    run = lambda **kw: render_rays(planes, dec, o, d, near, far, n_coarse=8, n_fine=8, return_weights=True, **kw)['t']
    assert torch.equal(run(), run())
    a, b = run(jitter=True, generator=torch.Generator().manual_seed(1)), run(jitter=True, generator=torch.Generator().manual_seed(1))
    c = run(jitter=True, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.testing.assert_close(stratified_samples(near, far, 4), near[..., None] + (far - near)[..., None] * torch.tensor([.125, .375, .625, .875]))


@pytest.mark.parametrize('chunk', [1, 7, 100, 10**6])
def test_chunked_equals_unchunked(chunk):
    planes, dec = sphere_triplane(0.5, n_features=4, resolution=32)
    cams = sample_cameras(2, 9, 11, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = render_image(planes, dec, cams, chunk=10**7, n_coarse=8, n_fine=8, background=(0.2, 0.3, 0.4))
        part = render_image(planes, dec, cams, chunk=chunk, n_coarse=8, n_fine=8, background=(0.2, 0.3, 0.4))
    assert full['rgb'].shape == (2, 3, 9, 11) and full['depth'].shape == (2, 1, 9, 11) and full['opacity'].shape == (2, 1, 9, 11)
    for k in full: torch.testing.assert_close(part[k], full[k])
    # one triplane per camera gives the same as one shared triplane
    per_cam = render_image(planes.expand(2, -1, -1, -1, -1), dec, cams, chunk=chunk, n_coarse=8, n_fine=8, background=(0.2, 0.3, 0.4))
    torch.testing.assert_close(per_cam['rgb'], full['rgb'])


def test_backends(monkeypatch):
    planes, dec = sphere_triplane(n_features=4, resolution=16)
    g = torch.Generator().manual_seed(8)
    o, d, near, far = random_rays(1, 8, g)
    monkeypatch.setitem(sys.modules, 'renderdiffusion_nb.render_triton', None) # make the import fail
    with pytest.raises(ImportError, match="backend='triton' needs triton"):
        render_rays(planes, dec, o, d, near, far, backend='triton')
    with pytest.raises(ValueError, match="backend must be"):
        render_rays(planes, dec, o, d, near, far, backend='cuda')


def _bad_cases():
    planes, dec = torch.zeros(1, 3, 4, 8, 8), TriplaneDecoder(4)
    o, d = torch.zeros(1, 5, 3), torch.tensor([1., 0., 0.]).expand(1, 5, 3)
    near, far = torch.zeros(1, 5), torch.ones(1, 5)
    t = torch.linspace(0, 1, 6).expand(1, 5, 6)
    nan = o.clone(); nan[0, 2, 1] = float('nan')
    cams = sample_cameras(1, 4, 4)
    return [
        (lambda: render_rays(planes, dec, o[..., :2], d, near, far), 'rays_o must have shape (B, N, 3)'),
        (lambda: render_rays(planes, dec, o, d[:, :4], near, far), 'N=5'),
        (lambda: render_rays(planes[0], dec, o, d, near, far), 'planes must have shape (B, 3, C, R, R)'),
        (lambda: render_rays(planes, TriplaneDecoder(8), o, d, near, far), 'n_features=8, but the planes have C=4'),
        (lambda: render_rays(planes, dec.double(), o, d, near, far), "decoder's parameters are torch.float64"),
        (lambda: render_rays(planes, dec, o, d, far, near), 'near must be <= far'),
        (lambda: render_rays(planes, dec, nan, d, near, far), 'rays_o contains NaN'),
        (lambda: render_rays(planes, dec, o.double(), d, near, far), 'rays_o is torch.float64'),
        (lambda: render_rays(planes, dec, o, d, near, far, n_coarse=0), 'positive int'),
        (lambda: render_rays(planes, dec, o, d, near, far, n_fine=-1), 'n_fine must be an int >= 0'),
        (lambda: render_rays(planes, dec, o, d, near, far, background=2.0), 'background must be in [0, 1]'),
        (lambda: render_rays(planes, dec, o, d, near, far, background=torch.ones(2, 3)), 'background must be a float, (3,) or (B, 3)'),
        (lambda: render_samples(planes, dec, o, d, t.flip(-1), near, far), 't must be sorted'),
        (lambda: render_samples(planes, dec, o, d, t * 2, near, far), 'must lie in [near, far]'),
        (lambda: render_samples(planes, dec, o, d, t[:, :3], near, far), 'N=5'),
        (lambda: render_image(planes, dec, 'camera'), 'cameras must be a Cameras'),
        (lambda: render_image(planes, dec, cams, chunk=0), 'chunk must be a positive int'),
        (lambda: sample_pdf(torch.zeros(1, 5, 4), torch.ones(1, 5, 4), 3), 'bounds must be (..., S+1)'),
    ]


@pytest.mark.parametrize('case', range(len(_bad_cases())))
def test_bad_inputs(case):
    make, msg = _bad_cases()[case]
    with pytest.raises((ValueError, TypeError)) as e: make()
    assert msg in str(e.value), str(e.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_matches_cpu():
    planes, dec = sphere_triplane(n_features=4, resolution=32)
    cams = sample_cameras(2, 16, 16, generator=torch.Generator().manual_seed(0))
    cpu = render_image(planes, dec, cams, n_coarse=16, n_fine=16, backend='torch')
    gpu = render_image(planes.cuda(), dec.cuda(), cams, n_coarse=16, n_fine=16, backend='torch')
    for k in ('rgb', 'opacity'): torch.testing.assert_close(gpu[k].cpu(), cpu[k], atol=1e-4, rtol=1e-4)
    solid = cpu['opacity'] > 0.5 # on near-empty rays the normalised depth amplifies rounding
    torch.testing.assert_close(gpu['depth'].cpu()[solid], cpu['depth'][solid], atol=1e-3, rtol=1e-4)


def test_stratified_samples_are_the_formula():
    "stratified_samples computes exactly near + (far - near) (k + u) / n, clamped to [near, far], in both modes."
    g = torch.Generator().manual_seed(3)
    near = torch.rand(3, 50, generator=g) * 2; far = near + torch.rand(3, 50, generator=g) * 3
    for n, jitter in ((64, False), (64, True), (5, True)):
        got = stratified_samples(near, far, n, jitter, torch.Generator().manual_seed(4))
        u = torch.rand(3, 50, n, generator=torch.Generator().manual_seed(4)) if jitter else torch.full((n,), 0.5)
        want = near[..., None] + (far - near)[..., None] * (torch.arange(n, dtype=near.dtype) + u) / n
        assert torch.equal(got, torch.minimum(torch.maximum(want, near[..., None]), far[..., None])), (n, jitter)


def test_value_checks_make_no_autograd_node():
    "The checks read values only: on a tensor that requires grad they record nothing for autograd (on the GPU they run on a side stream, where an autograd node would tie the planes' gradient to that stream)."
    from renderdiffusion_nb.core import finite_check
    x = torch.randn(5, requires_grad=True)
    lo_hi, _ = finite_check(x * 2, 'x')
    assert not lo_hi.requires_grad and lo_hi.grad_fn is None
