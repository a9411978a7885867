"What a user hands in: images in the wrong range, counts of steps, devices. Each misuse gets its message; correct input is unchanged."
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from renderdiffusion_nb.cameras import sample_cameras
from renderdiffusion_nb.core import ImageRangeWarning, as_model_image, check_count, get_device, load_image
from renderdiffusion_nb.evaluate import evaluate_generation, psnr, ssim
from renderdiffusion_nb.generate import generate
from renderdiffusion_nb.inpaint import box_mask, inpaint, inpaint_viewer, repaint_timeline
from renderdiffusion_nb.model import RenderDiffusion, model_config
from renderdiffusion_nb.readers import read_nerf_synthetic
from renderdiffusion_nb.reconstruct import reconstruct, reconstruction_viewer, tr_sweep

S = 32


@pytest.fixture(scope='module')
def tiny():
    "An untrained tiny model with T = 8, so that every timestep of a run can be counted cheaply."
    torch.manual_seed(0)
    return RenderDiffusion(model_config('tiny', T=8)).eval()


@pytest.fixture(scope='module')
def cams():
    return sample_cameras(2, S, S, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope='module')
def img():
    return torch.rand(2, 3, S, S, generator=torch.Generator().manual_seed(1)) * 2 - 1


def calls(model):
    "A list that grows by one at every denoiser call, and the hook to remove."
    seen = []
    return seen, model.register_forward_hook(lambda m, i, o: seen.append(int(i[1].flatten()[0])))


def unit_warnings(f):
    "The ImageRangeWarnings `f()` raises."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        f()
    return [w for w in caught if w.category is ImageRangeWarning]


# ---- the shared image check ----

def test_valid_float_image_is_returned_untouched(img):
    assert as_model_image(img) is img
    half = img.half()
    assert as_model_image(half) is half
    assert not unit_warnings(lambda: as_model_image(img))


def test_uint8_is_converted():
    u8 = torch.tensor([0, 64, 128, 255], dtype=torch.uint8)
    torch.testing.assert_close(as_model_image(u8), u8.float() / 127.5 - 1)
    a = as_model_image(np.full((3, 2, 2), 255, np.uint8))
    assert a.dtype == torch.float32 and (a == 1).all()


@pytest.mark.parametrize('make,msg', [
    (lambda x: (x + 1) * 127.5, 'looks like a 0..255 image'),
    (lambda x: x * 4, 'must lie in [-1, 1] (give or take 0.1)'),
    (lambda x: x - 2, 'must lie in [-1, 1]'),
    (lambda x: x.masked_fill(x > 0.5, float('nan')), 'contains NaN or infinity'),
    (lambda x: x.masked_fill(x > 0.5, float('inf')), 'contains NaN or infinity'),
])
def test_float_misuse_is_refused(img, make, msg):
    with pytest.raises(ValueError, match=msg.replace('[', r'\[').replace(']', r'\]').replace('(', r'\(').replace(')', r'\)')):
        as_model_image(make(img), 'image')


@pytest.mark.parametrize('bad,msg', [(torch.zeros(3, 2, 2, dtype=torch.int64), 'got dtype torch.int64'),
                                     (torch.zeros(3, 2, 2, dtype=torch.bool), 'got dtype torch.bool'),
                                     ([[0.0]], 'must be a torch.Tensor or NumPy array, got list')])
def test_other_types_are_refused(bad, msg):
    with pytest.raises(TypeError, match=msg): as_model_image(bad)


def test_unit_range_warns_with_what_was_seen(img):
    w = unit_warnings(lambda: as_model_image((img + 1) / 2, 'image'))
    assert len(w) == 1 and 'looks like a [0, 1] image' in str(w[0].message) and 'its values span [' in str(w[0].message)
    assert not unit_warnings(lambda: as_model_image(torch.ones(3, 2, 2), warn=False))


def test_only_checked_values_count(img):
    hole = box_mask(S, S, 4, 4, 8, 8)
    x = torch.where(hole, 1e6, img) # anything under the hole
    assert as_model_image(x, where=~hole) is x
    with pytest.raises(ValueError, match='must lie in'): as_model_image(x)


# ---- every place images come in ----

def test_reconstruct_images(tiny, img, cams):
    with pytest.raises(ValueError, match='0..255'): reconstruct(tiny, (img + 1) * 127.5, cams)
    assert len(unit_warnings(lambda: reconstruct(tiny, (img + 1) / 2, cams))) == 1
    q = torch.from_numpy(((img + 1) * 127.5).round().numpy().astype(np.uint8)) # the same images as uint8
    torch.testing.assert_close(reconstruct(tiny, q, cams)['image'], reconstruct(tiny, q.float() / 127.5 - 1, cams)['image'])


def test_inpaint_images(tiny, img, cams):
    m = box_mask(S, S, 8, 8, 16, 16)
    run = lambda x: inpaint(tiny, x, m, cams, steps=2, generator=torch.Generator().manual_seed(0), progress=False)
    with pytest.raises(ValueError, match='0..255'): run((img + 1) * 127.5)
    assert len(unit_warnings(lambda: run((img + 1) / 2))) == 1
    torch.testing.assert_close(run(torch.where(m, float('nan'), img))['image'], run(img)['image']) # under the mask: ignored


def test_viewers_check_images(tiny, img, cams):
    with pytest.raises(ValueError, match='0..255'): reconstruction_viewer(tiny, (img[:1] + 1) * 127.5, cams[:1])
    with pytest.raises(ValueError, match='0..255'): inpaint_viewer(tiny, (img[:1] + 1) * 127.5, cams[:1])
    assert len(unit_warnings(lambda: inpaint_viewer(tiny, (img[:1] + 1) / 2, cams[:1], steps=2))) == 1


def test_metrics_check_the_target(img):
    with pytest.raises(ValueError, match='target looks like a 0..255 image'): psnr(img, (img + 1) * 127.5)
    assert len(unit_warnings(lambda: ssim(img, (img + 1) / 2))) == 1
    assert not unit_warnings(lambda: psnr(torch.ones_like(img), img)) # a plain white prediction is a fair baseline
    with pytest.raises(ValueError, match='real looks like a 0..255 image'): evaluate_generation(RenderDiffusion('tiny'), (img + 1) * 127.5)


def test_image_files_16_bit_and_background(tmp_path):
    Image.fromarray(np.full((4, 4), 200 * 257, np.uint16)).save(tmp_path / 'g16.png')
    torch.testing.assert_close(load_image(tmp_path / 'g16.png'), torch.full((3, 4, 4), 200 / 127.5 - 1))
    with pytest.raises(ValueError, match=r'background must be 3 numbers in \[0, 1\]'): read_nerf_synthetic(tmp_path, background=(255, 255, 255))


# ---- counts: one rule ----

@pytest.mark.parametrize('bad', [0, -3])
def test_count_below_one_is_refused(bad):
    with pytest.raises(ValueError, match=f'steps must be a positive int or None \\(for 20\\), got {bad}'): check_count(bad, 'steps', default=20)


@pytest.mark.parametrize('bad', [2.5, True, '4'])
def test_count_of_another_type_is_refused(bad):
    with pytest.raises(TypeError, match='steps must be a positive int'): check_count(bad, 'steps', default=20)


def test_generate_steps(tiny):
    run = lambda **kw: generate(tiny, 1, generator=torch.Generator().manual_seed(0), progress=False, **kw)
    for bad, err in [(0, ValueError), (-3, ValueError), (2.5, TypeError)]:
        with pytest.raises(err, match='steps must be a positive int or None'): run(steps=bad)
    seen, hook = calls(tiny)
    try:
        run(steps=50); assert len(seen) == 8, seen # capped at T
        seen.clear(); run(steps=None); assert len(seen) == 8 # the default, 50, capped too
        seen.clear(); run(steps=3); assert len(seen) == 3
    finally: hook.remove()
    with pytest.raises(ValueError, match='batch_size must be a positive int'): generate(tiny, 2, batch_size=0)


def test_reconstruct_steps(tiny, img, cams):
    for bad, err in [(0, ValueError), (-3, ValueError), (2.5, TypeError)]:
        with pytest.raises(err, match='steps must be a positive int or None \\(for 20\\)'): reconstruct(tiny, img, cams, t_r=5, steps=bad)
    seen, hook = calls(tiny)
    try:
        reconstruct(tiny, img, cams, t_r=5, steps=50); assert seen == [5, 4, 3, 2, 1, 0], seen # t_r + 1 timesteps
        seen.clear(); reconstruct(tiny, img, cams, t_r=0, steps=None); assert seen == [0]
        seen.clear(); reconstruct(tiny, img, cams, t_r=7, steps=2); assert len(seen) == 2
    finally: hook.remove()
    with pytest.raises(ValueError, match='t_r must be an int'): reconstruct(tiny, img, cams, t_r=True)


def test_inpaint_steps_and_resampling(tiny, img, cams):
    m = box_mask(S, S, 8, 8, 16, 16)
    run = lambda **kw: inpaint(tiny, img, m, cams, generator=torch.Generator().manual_seed(0), progress=False, **kw)
    for kw, msg in [(dict(steps=0), 'steps must be'), (dict(steps=-3), 'steps must be'), (dict(resample=0), 'resample must be'),
                    (dict(jump=-1), 'jump must be'), (dict(resample=1.5), 'resample must be')]:
        with pytest.raises((ValueError, TypeError), match=msg): run(**kw)
    seen, hook = calls(tiny)
    try:
        run(steps=50); assert len(seen) == 8 # capped at T
        seen.clear(); run(steps=4, resample=2, jump=10); assert len(seen) == 4 + 3 # the jump, capped at K - 1 = 3, still resamples
    finally: hook.remove()
    assert repaint_timeline(4, 2, 10) == repaint_timeline(4, 2, 3) != repaint_timeline(4)


def test_sweep_and_viewer_counts(tiny, img, cams):
    with pytest.raises(ValueError, match='n_scenes must be a positive int'): tr_sweep(tiny, 'clevr1', n_scenes=0)
    with pytest.raises(ValueError, match='t_max must be a positive int'): reconstruction_viewer(tiny, img[:1], cams[:1], t_max=0)


# ---- devices ----

@pytest.mark.parametrize('bad', ['mps', 'gpu', 'xla', torch.device('meta')])
def test_unsupported_devices_are_named(bad):
    with pytest.raises(ValueError, match=r"device must be None, 'auto', 'cpu', 'cuda' or 'cuda:N'"): get_device(bad)


def test_supported_devices():
    assert get_device('cpu') == torch.device('cpu') == get_device(torch.device('cpu'))
    assert get_device(None).type in ('cpu', 'cuda')
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match='CUDA GPU'): get_device(f'cuda:{torch.cuda.device_count()}')
    else:
        with pytest.raises(RuntimeError, match='no CUDA GPU'): get_device('cuda')
