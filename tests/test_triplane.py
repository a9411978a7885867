"Triplane sampling against an independent bilinear reference, gradients, the decoder and bad inputs."
import pytest
import torch

from renderdiffusion_nb.triplane import TriplaneDecoder, sample_triplane, sphere_triplane


def bilinear_reference(plane, u, v):
    "Read plane (C, R, R) at coords u (columns) and v (rows) in [-1, 1], align_corners=False, border clamped."
    C, R, _ = plane.shape
    x = ((u + 1) * R - 1) / 2
    y = ((v + 1) * R - 1) / 2
    x, y = x.clamp(0, R - 1), y.clamp(0, R - 1)
    x0, y0 = x.floor().long(), y.floor().long()
    x1, y1 = (x0 + 1).clamp(max=R - 1), (y0 + 1).clamp(max=R - 1)
    wx, wy = x - x0, y - y0
    return (plane[:, y0, x0] * (1 - wx) * (1 - wy) + plane[:, y0, x1] * wx * (1 - wy)
            + plane[:, y1, x0] * (1 - wx) * wy + plane[:, y1, x1] * wx * wy).T


def triplane_reference(planes, pts):
    B = planes.shape[0]
    out = []
    for b in range(B):
        x, y, z = pts[b].unbind(-1)
        f = (bilinear_reference(planes[b, 0], x, y) + bilinear_reference(planes[b, 1], x, z)
             + bilinear_reference(planes[b, 2], y, z)) / 3
        out.append(f * (pts[b].abs() <= 1).all(-1, keepdim=True))
    return torch.stack(out)


@pytest.mark.parametrize('B,C,R,N', [(1, 1, 1, 5), (2, 3, 7, 33), (3, 16, 32, 100), (1, 32, 5, 1)])
def test_matches_reference(B, C, R, N):
    g = torch.Generator().manual_seed(B * 1000 + C * 10 + R)
    planes = torch.randn(B, 3, C, R, R, generator=g, dtype=torch.float64)
    pts = torch.rand(B, N, 3, generator=g, dtype=torch.float64) * 2.4 - 1.2 # some outside the box
    pts[:, 0] = torch.tensor([1., -1., 1.], dtype=torch.float64) # on the faces: inside, border clamped
    torch.testing.assert_close(sample_triplane(planes, pts), triplane_reference(planes, pts))


def test_outside_box_is_zero_and_faces_are_inside():
    planes = torch.ones(1, 3, 4, 8, 8)
    pts = torch.tensor([[[1.0, 0, 0], [1.0001, 0, 0], [0, -1.5, 0], [0, 0, -1.0]]])
    f = sample_triplane(planes, pts)
    assert torch.equal(f[0, :, 0], torch.tensor([1., 0., 0., 1.]))


def test_plane_order():
    "Channel p of plane p set to 1 where its first coordinate > 0: reveals which coordinates each plane uses."
    R = 8
    planes = torch.zeros(1, 3, 3, R, R)
    for p in range(3): planes[0, p, p, :, R // 2:] = 3. # columns with first coordinate > 0
    f = sample_triplane(planes, torch.tensor([[[0.5, -0.5, -0.5], [-0.5, 0.5, -0.5]]]))
    torch.testing.assert_close(f[0], torch.tensor([[1., 1., 0.], [0., 0., 1.]])) # xy, xz read x; yz reads y


def test_gradcheck():
    g = torch.Generator().manual_seed(0)
    planes = torch.randn(1, 3, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    pts = (torch.rand(1, 6, 3, generator=g, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    assert torch.autograd.gradcheck(sample_triplane, (planes, pts))


def test_decoder_shapes_and_ranges():
    torch.manual_seed(1)
    dec = TriplaneDecoder(16, hidden=32, density_shift=-2.)
    sigma, rgb = dec(torch.randn(2, 7, 16) * 10)
    assert sigma.shape == (2, 7) and rgb.shape == (2, 7, 3)
    assert (sigma >= 0).all() and (rgb >= 0).all() and (rgb <= 1).all()


def test_decoder_starts_as_grey_fog_for_zero_features_and_passes_others_on():
    "The untrained U-Net's zero planes decode to exactly the fog (softplus(shift), grey), for any shift and width; other features reach the output at full scale."
    for seed, shift, hidden in ((2, -1., 64), (3, -3., 16), (4, 0.5, 128)):
        torch.manual_seed(seed)
        dec = TriplaneDecoder(32, hidden=hidden, density_shift=shift)
        sigma, rgb = dec(torch.zeros(7, 32))
        torch.testing.assert_close(sigma, torch.nn.functional.softplus(torch.tensor(shift)).expand(7), atol=1e-6, rtol=0)
        torch.testing.assert_close(rgb, torch.full((7, 3), 0.5), atol=1e-6, rtol=0)
        s, c = dec(torch.randn(4096, 32))
        assert c.std() > 0.05 and s.std() > 0.02, (seed, c.std().item(), s.std().item())


def test_decoder_is_seeded():
    torch.manual_seed(3); a = TriplaneDecoder(8)
    torch.manual_seed(3); b = TriplaneDecoder(8)
    torch.manual_seed(4); c = TriplaneDecoder(8)
    assert torch.equal(a.fc2.weight, b.fc2.weight) and not torch.equal(a.fc1.weight, c.fc1.weight)


@pytest.mark.parametrize('make,msg', [
    (lambda: sample_triplane(torch.zeros(1, 3, 4, 8, 6), torch.zeros(1, 2, 3)), 'planes must have shape'),
    (lambda: sample_triplane(torch.zeros(2, 3, 4, 8, 8), torch.zeros(1, 2, 3)), 'B=2'),
    (lambda: sample_triplane(torch.zeros(1, 3, 4, 8, 8), torch.zeros(1, 2, 2)), 'pts must have shape'),
    (lambda: sample_triplane(torch.zeros(1, 3, 4, 8, 8, dtype=torch.long), torch.zeros(1, 2, 3)), 'floating-point'),
    (lambda: sample_triplane(torch.zeros(1, 3, 4, 8, 8), torch.zeros(1, 2, 3, dtype=torch.float64)), 'must match planes'),
    (lambda: TriplaneDecoder(0), 'positive int'),
    (lambda: TriplaneDecoder(8)(torch.zeros(3, 9)), 'n_features=8'),
    (lambda: sphere_triplane(n_features=3), 'n_features >= 4'),
])
def test_bad_inputs(make, msg):
    with pytest.raises((ValueError, TypeError), match=None) as e: make()
    assert msg in str(e.value)


def test_sphere_triplane_is_a_sphere():
    planes, dec = sphere_triplane(0.5, center=(0.2, -0.1, 0.0), resolution=64)
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(1, 4000, 3, generator=g) * 2 - 1
    with torch.no_grad(): sigma, _ = dec(sample_triplane(planes, pts))
    r = (pts[0] - torch.tensor([0.2, -0.1, 0.0])).norm(dim=-1)
    assert (sigma[0][r < 0.45] > 5).all() and (sigma[0][r > 0.55] < 1e-3).all()
