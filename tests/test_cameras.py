"Camera conventions, rays and bad input (the page shows the main properties; these sweep the edges)."
import math

import pytest
import torch

from renderdiffusion_nb.cameras import (Cameras, convert_opengl, get_rays, intrinsics_from_fov, look_at, orbit_cameras,
                                        pixel_rays, project_points, ray_box_intersect, sample_cameras)


def _cams(n=3, H=7, W=5, seed=0):
    return sample_cameras(n, H, W, generator=torch.Generator().manual_seed(seed))


def test_centre_ray_hits_target_odd_size():
    target = torch.tensor([0.1, 0.2, -0.3])
    eye = torch.tensor([[2., -1., 1.5], [0., 0., 3.], [0., 0., -3.]])
    cams = Cameras(intrinsics_from_fov(35., 9, 11).expand(3, 3, 3), look_at(eye, target), 9, 11)
    rays_o, rays_d = get_rays(cams)
    centre = rays_d.view(3, 9, 11, 3)[:, 4, 5]
    to_target = (target - eye) / (target - eye).norm(dim=-1, keepdim=True)
    torch.testing.assert_close(centre, to_target, atol=1e-5, rtol=0)


@pytest.mark.parametrize('H,W', [(1, 1), (3, 8), (16, 16)])
def test_shapes_and_unit_dirs(H, W):
    cams = _cams(2, H, W)
    o, d = get_rays(cams)
    assert o.shape == d.shape == (2, H * W, 3)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(2, H * W))


def test_row_major_order():
    cams = _cams(1, 4, 6)
    _, d = get_rays(cams)
    uv, _ = project_points(cams, cams.centers[:, None] + d)
    v, u = torch.meshgrid(torch.arange(4) + .5, torch.arange(6) + .5, indexing='ij')
    torch.testing.assert_close(uv[0], torch.stack([u, v], -1).view(-1, 2), atol=1e-4, rtol=0)


def test_project_then_cast_recovers_points_general_K():
    cams = _cams(2, 10, 12)
    K = cams.K.clone(); K[:, 0, 0] *= 1.3; K[:, 0, 1] = 0.7; K[:, 0, 2] += 1.1
    cams = Cameras(K, cams.c2w, 10, 12)
    pts = torch.rand(2, 64, 3, generator=torch.Generator().manual_seed(3)) * 2 - 1
    uv, z = project_points(cams, pts)
    o, d = pixel_rays(cams, uv)
    torch.testing.assert_close(o + (pts - o).norm(dim=-1, keepdim=True) * d, pts, atol=1e-4, rtol=0)
    assert (z > 0).all()


def test_look_at_straight_down_is_rigid():
    c2w = look_at(torch.tensor([[0., 0., 3.], [0., 0., -3.]]))
    Cameras(intrinsics_from_fov(40., 4, 4).expand(2, 3, 3), c2w, 4, 4)
    torch.testing.assert_close(c2w[:, :3, 2], torch.tensor([[0., 0., -1.], [0., 0., 1.]]))


def test_sample_cameras_deterministic_and_ranges():
    a, b = _cams(50, seed=4), _cams(50, seed=4)
    assert torch.equal(a.c2w, b.c2w)
    cams = sample_cameras(500, 8, 8, radius=2.0, azimuth=(90., 180.), elevation=(0., 30.), generator=torch.Generator().manual_seed(0))
    c = cams.centers
    torch.testing.assert_close(c.norm(dim=-1), torch.full((500,), 2.))
    az = torch.rad2deg(torch.atan2(c[:, 1], c[:, 0]))
    assert (az >= 90 - 1e-3).all() and (az <= 180 + 1e-3).all()
    assert (c[:, 2] >= -1e-5).all() and (c[:, 2] <= 2 * math.sin(math.radians(30)) + 1e-5).all()


def test_orbit_cameras_spacing():
    cams = orbit_cameras(8, 4, 4, radius=3., elevation=0.)
    torch.testing.assert_close(cams.centers[:, 2], torch.zeros(8), atol=1e-6, rtol=0)
    torch.testing.assert_close(cams.centers[2], torch.tensor([0., 3., 0.]), atol=1e-5, rtol=0)


def test_indexing_and_cat():
    cams = _cams(5)
    assert len(cams[0]) == 1 and len(cams[-1]) == 1 and len(cams[1:4]) == 3
    assert torch.equal(cams[-1].c2w, cams.c2w[-1:])
    assert torch.equal(Cameras.cat([cams[:2], cams[2:]]).c2w, cams.c2w)
    with pytest.raises(ValueError, match='different image sizes'):
        Cameras.cat([cams, _cams(1, 3, 3)])


def test_ray_box_intersect_inside_and_grazing():
    o = torch.tensor([[[0.5, 0., 0.], [-2., 0.99, 0.], [-2., 1.5, 0.]]])
    d = torch.tensor([[[1., 0., 0.], [1., 0., 0.], [1., 0., 0.]]])
    near, far = ray_box_intersect(o, d)
    torch.testing.assert_close(near[0, :2], torch.tensor([0., 1.]))
    torch.testing.assert_close(far[0, :2], torch.tensor([0.5, 3.]))
    assert near[0, 2] == far[0, 2]
    assert (near >= 0).all()


@pytest.mark.parametrize('make,msg', [
    (lambda c: c.c2w * torch.tensor([1., 1., 2., 1.]), 'not a rigid camera pose'),
    (lambda c: c.c2w * torch.tensor([-1., 1., 1., 1.]), 'det R = -1'),
    (lambda c: torch.where(torch.arange(16).view(4, 4) == 5, torch.tensor(float('inf')), c.c2w), 'NaN or infinity'),
    (lambda c: c.c2w.clone().index_put_((torch.tensor(0), torch.tensor(3), torch.tensor(0)), torch.tensor(1.)), 'bottom row'),
])
def test_bad_poses(make, msg):
    cams = _cams(2)
    with pytest.raises(ValueError, match=msg):
        Cameras(cams.K, make(cams), cams.H, cams.W)


def test_bad_intrinsics_and_sizes():
    cams = _cams(2)
    with pytest.raises(ValueError, match='pinhole'):
        Cameras(-cams.K, cams.c2w, 7, 5)
    with pytest.raises(ValueError, match='B=1'):
        Cameras(cams.K[:1], cams.c2w, 7, 5)
    with pytest.raises(ValueError, match='positive int'):
        Cameras(cams.K, cams.c2w, 0, 5)
    with pytest.raises(ValueError, match=r'\(0, 180\)'):
        intrinsics_from_fov(180., 4, 4)


def test_convert_opengl_involution():
    c2w = _cams(4).c2w
    gl = convert_opengl(c2w)
    torch.testing.assert_close(convert_opengl(gl), c2w)
    torch.testing.assert_close(gl[:, :3, 2], -c2w[:, :3, 2])
    with pytest.raises(ValueError, match=r'\(\.\.\., 4, 4\)'):
        convert_opengl(torch.zeros(3, 3))


def test_fp64_and_to():
    cams = _cams(2)
    c64 = Cameras(cams.K.double(), cams.c2w.double(), cams.H, cams.W)
    o, d = get_rays(c64)
    assert d.dtype == torch.float64
    assert cams.to('cpu').device.type == 'cpu'


def test_look_at_broadcasts_and_spherical_takes_scalars():
    from renderdiffusion_nb.cameras import look_at, spherical_cameras
    c2w = look_at(torch.tensor([2., 0., 1.]), torch.tensor([[0., 0., 0.], [0., 0., .5]]))
    assert c2w.shape == (2, 4, 4) and torch.allclose(c2w[:, :3, 3], torch.tensor([2., 0., 1.]).expand(2, 3))
    cams = spherical_cameras(30., 20., 2.5, 8, 8)
    assert len(cams) == 1 and torch.allclose(cams.centers.norm(dim=-1), torch.tensor([2.5]))


def test_pinhole_inverse_matches_the_solver():
    "The closed-form inverse the rays use (no solver, so no wait for the GPU) equals torch.linalg.inv, skew included."
    from renderdiffusion_nb.cameras import _pinhole_inverse, intrinsics_from_fov
    K = intrinsics_from_fov(torch.tensor([30., 50., 90.]), 24, 40)
    K[1, 0, 1] = 0.7
    torch.testing.assert_close(_pinhole_inverse(K), torch.linalg.inv(K), rtol=1e-6, atol=1e-7)
