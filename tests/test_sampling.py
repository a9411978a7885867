"The forward process, the samplers and the three uses of a trained model: sweeps and bad input."
import math

import pytest
import torch

from renderdiffusion_nb.cameras import sample_cameras
from renderdiffusion_nb.diffusion import NoiseSchedule
from renderdiffusion_nb.generate import generate, render_orbit
from renderdiffusion_nb.inpaint import box_mask, freeform_mask, inpaint, repaint_timeline
from renderdiffusion_nb.model import RenderDiffusion
from renderdiffusion_nb.reconstruct import reconstruct
from renderdiffusion_nb.evaluate import frechet_distance, psnr


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return RenderDiffusion('tiny').eval()


@pytest.mark.parametrize('kind', ['linear', 'cosine'])
@pytest.mark.parametrize('T', [1, 7, 1000])
def test_schedule_shapes_and_posterior_at_zero(kind, T):
    s = NoiseSchedule(T, kind)
    assert s.betas.dtype == torch.float64 and len(s.alpha_bar) == T
    x0, xt = torch.randn(3, 2), torch.randn(3, 2)
    mean, var = s.q_posterior(x0, xt, 0)
    torch.testing.assert_close(mean, x0)
    assert (var == 0).all()


@pytest.mark.parametrize('sampler,steps,t_start', [('ddpm', 1, None), ('ddpm', 13, 400), ('ddim', 1, 999), ('ddim', 7, 50), ('ddim', 51, 50)])
def test_oracle_sampling_returns_x0(sampler, steps, t_start):
    s = NoiseSchedule(1000, 'cosine')
    x0 = torch.rand(2, 3, 5, 7) * 2 - 1
    x_start = None if t_start is None else s.q_sample(x0, t_start, generator=torch.Generator().manual_seed(1))
    out, _ = s.denoise(lambda x, t: x0, x0.shape, steps=steps, sampler=sampler, x_start=x_start, t_start=t_start,
                       generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)


def test_denoise_visits_respaced_timesteps_in_order():
    s, seen = NoiseSchedule(100), []
    s.denoise(lambda x, t: (seen.append(int(t[0])), x)[1], (1, 2), steps=5)
    assert seen == sorted(seen, reverse=True) and seen[0] == 99 and seen[-1] == 0 and len(seen) == 5


def test_ddim_eta1_matches_ddpm_variance():
    "DDIM with eta=1 between neighbouring steps draws with the DDPM posterior variance."
    s = NoiseSchedule(50)
    t, x0, xt = 20, torch.zeros(20000, 1), torch.zeros(20000, 1)
    g = torch.Generator().manual_seed(0)
    a = s.ddim_step(xt, x0, t, t - 1, eta=1.0, generator=g)
    _, var = s.q_posterior(x0[:1], xt[:1], t)
    torch.testing.assert_close(a.var(), var.squeeze(), rtol=0.05, atol=0)


@pytest.mark.parametrize('bad,msg', [(torch.tensor([1.5]), 'integer'), (torch.tensor([-1]), 'must lie in'), (torch.tensor([0, 1]), 'shape (1,)')])
def test_bad_timesteps(bad, msg):
    with pytest.raises((ValueError, TypeError), match=msg.replace('(', r'\(').replace(')', r'\)')):
        NoiseSchedule(10).q_sample(torch.zeros(1, 3), bad)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match='steps must be an int'): NoiseSchedule(10).respace(11)
    with pytest.raises(ValueError, match='t_prev must be smaller'): NoiseSchedule(10).ddim_step(torch.zeros(1, 2), torch.zeros(1, 2), 3, 3)
    with pytest.raises(ValueError, match="sampler must be"): NoiseSchedule(10).denoise(lambda x, t: x, (1, 2), sampler='euler')


def test_reconstruct_at_zero_is_one_forward_pass(tiny):
    cams = sample_cameras(2, 32, 32, generator=torch.Generator().manual_seed(0))
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    rec = reconstruct(tiny, img, cams, t_r=0)
    with torch.no_grad(): out = tiny(img, torch.zeros(2, dtype=torch.long), cams)
    torch.testing.assert_close(rec['planes'], out['planes'])
    torch.testing.assert_close(rec['image'], out['x0_hat'])


def test_reconstruct_bad_input(tiny):
    cams = sample_cameras(2, 32, 32)
    with pytest.raises(ValueError, match='t_r must be an int'): reconstruct(tiny, torch.full((2, 3, 32, 32), -0.5), cams, t_r=1000)
    with pytest.raises(ValueError, match='2 images but 1 cameras'): reconstruct(tiny, torch.full((2, 3, 32, 32), -0.5), cams[:1])
    with pytest.raises(ValueError, match='NaN'): reconstruct(tiny, torch.full((2, 3, 32, 32), float('nan')), cams)
    with pytest.raises(ValueError, match='image must have shape'): reconstruct(tiny, torch.full((2, 3, 64, 64), -0.5), cams)


def test_generate_chunks_and_orbit(tiny, tmp_path):
    out = generate(tiny, 5, steps=2, batch_size=2, generator=torch.Generator().manual_seed(0), progress=False)
    assert out['images'].shape == (5, 3, 32, 32) and out['planes'].shape[0] == 5
    orbit = render_orbit(tiny, out['planes'][:1], n_frames=3, size=24, path=tmp_path / 'o.gif')
    assert orbit['rgb'].shape == (1, 3, 3, 24, 24) and (tmp_path / 'o.gif').stat().st_size > 0
    with pytest.raises(FileExistsError): render_orbit(tiny, out['planes'][:1], n_frames=3, path=tmp_path / 'o.gif')


@pytest.mark.parametrize('K,r,j', [(1, 1, 1), (10, 1, 3), (10, 4, 3), (25, 2, 10), (7, 3, 7)])
def test_repaint_timeline(K, r, j):
    tl = repaint_timeline(K, r, j)
    assert tl[0] == K - 1 and tl[-1] == -1 and all(abs(a - b) == 1 for a, b in zip(tl, tl[1:]))
    downs = sum(b < a for a, b in zip(tl, tl[1:]))
    ups = sum(b > a for a, b in zip(tl, tl[1:]))
    j = min(j, max(1, K - 1)) # a jump past the chain is capped (page 00's count rule), so it still resamples
    assert downs - ups == K and ups == (r - 1) * j * len(range(0, K - j, j))


def test_inpaint_keeps_known_pixels_and_checks_masks(tiny):
    cams = sample_cameras(1, 32, 32)
    img = torch.rand(1, 3, 32, 32) * 2 - 1
    m = freeform_mask(32, 32, strokes=3, generator=torch.Generator().manual_seed(0))
    out = inpaint(tiny, img, m, cams, steps=4, resample=2, jump=2, progress=False)
    torch.testing.assert_close(out['image'][~m.expand_as(img)], img[~m.expand_as(img)])
    with pytest.raises(ValueError, match='match the image'): inpaint(tiny, img, m[..., :16], cams, steps=2)
    with pytest.raises(ValueError, match='must start inside'): box_mask(32, 32, 40, 0, 2, 2)


def test_metrics_bad_input_and_symmetry():
    a, b = torch.randn(300, 4), torch.randn(300, 4) + 0.5
    assert math.isclose(frechet_distance(a, b), frechet_distance(b, a), rel_tol=1e-6)
    with pytest.raises(ValueError, match='NaN'): psnr(torch.full((1, 3, 8, 8), float('nan')), torch.full((1, 3, 8, 8), -0.5))
