"Scene generator, datasets on disk and standard formats: sweeps, faults and bad input."
import json
import os

import pytest
import torch

from renderdiffusion_nb.cameras import BACKGROUND, Cameras, convert_opengl, get_rays, look_at, project_points
from renderdiffusion_nb.data import MultiViewDataset, SceneDataset, make_dataset, read_manifest
from renderdiffusion_nb.readers import export_nerf_synthetic, export_srn, read_nerf_synthetic, read_srn
from renderdiffusion_nb.scenes import (FAMILIES, FLOOR_Z, culled_hit, hash_uniform, nearest_hit, object_bounds, render_scene, render_scenes,
                                       sample_scenes, scene_cameras, stream_key, unproject_depth)

FAM = sorted(FAMILIES)


@pytest.fixture(scope='module')
def renders():
    return {f: render_scenes(f, torch.arange(6), views=2, res=24, device='cpu') for f in FAM}


@pytest.mark.parametrize('family', FAM)
def test_shapes_dtypes_ranges(renders, family):
    r = renders[family]
    assert r['image'].shape == (6, 2, 3, 24, 24) and r['image'].dtype == torch.float32
    assert r['depth'].shape == r['mask'].shape == r['object_mask'].shape == (6, 2, 1, 24, 24)
    assert r['K'].shape == (6, 2, 3, 3) and r['c2w'].shape == (6, 2, 4, 4)
    assert r['image'].min() >= -1 and r['image'].max() <= 1
    assert set(r['mask'].unique().tolist()) <= {0., 1.}
    assert (r['object_mask'] <= r['mask']).all()
    assert (r['depth'][r['mask'] == 0] == 0).all() and (r['depth'][r['mask'] == 1] > 0).all()
    bg = torch.tensor(BACKGROUND).view(3, 1) * 2 - 1
    img = r['image'].permute(0, 1, 3, 4, 2)[r['mask'][:, :, 0] == 0]
    assert torch.equal(img, bg.T.expand_as(img))
    assert r['object_mask'].flatten(2).amax(-1).min() == 1, 'every view sees the object'


@pytest.mark.parametrize('family', FAM)
def test_everything_inside_box(renders, family):
    r = renders[family]
    cams = Cameras(r['K'].view(-1, 3, 3), r['c2w'].view(-1, 4, 4), 24, 24)
    pts = unproject_depth(r['depth'].view(-1, 1, 24, 24), cams)
    assert pts[r['mask'].view(12, -1) > 0].abs().max() <= 1 + 1e-4


@pytest.mark.parametrize('family', FAM)
def test_objects_inside_margin(family):
    sc = sample_scenes(family, torch.arange(3000), device='cpu')
    lo, hi = object_bounds(sc)
    assert lo.min() >= -0.95 and hi.max() <= 0.95 and (lo[:, 2] >= FLOOR_Z - 1e-6).all()
    assert sc.active.any(1).all() and (sc.half > 0).all()


@pytest.mark.parametrize('family', FAM)
def test_deterministic_and_batch_independent(family):
    a = render_scenes(family, torch.tensor([0, 5, 9]), views=2, res=16, device='cpu', chunk=4)
    b = render_scene(family, 5, views=2, res=16, device='cpu')
    for k in ('image', 'depth', 'mask'):
        assert torch.equal(a[k][1], b[k])
    assert not torch.equal(a['image'][0], a['image'][1])
    c = render_scene(family, 5, views=2, res=16, seed=1, device='cpu')
    assert not torch.equal(b['image'], c['image'])


def test_hash_uniform_batch_independent():
    key = stream_key('x', 1)
    u = hash_uniform(key, torch.arange(50), 10)
    assert torch.equal(hash_uniform(key, torch.arange(20, 30), torch.arange(3, 7)), u[20:30, 3:7])
    assert u.min() >= 0 and u.max() < 1
    assert not torch.equal(hash_uniform(stream_key('x', 2), torch.arange(50), 10), u)


@pytest.mark.parametrize('family', FAM)
def test_depth_consistent_across_views(family):
    "Points of view 0 that view 1 sees unobstructed land where view 1's own depth puts them."
    s = render_scene(family, 1, views=2, res=48, device='cpu')
    cams, depth = s['cameras'], s['depth']
    pts = unproject_depth(depth, cams)
    uv, z = project_points(cams[1], pts[:1])
    ij = uv[0].floor().long()
    ok = (depth[0, 0].view(-1) > 0) & (ij >= 0).all(-1) & (ij < 48).all(-1)
    k = ij[ok, 1] * 48 + ij[ok, 0]
    d1 = (pts[0, ok] - cams.centers[1]).norm(dim=-1)
    other = depth[1, 0].view(-1)[k]
    agree = (d1 - other).abs() < 0.05
    assert agree.float().mean() > 0.3
    # where they agree, the two unprojected 3D points are within about one pixel footprint
    assert (pts[1, k[agree]] - pts[0, ok][agree]).norm(dim=-1).max() < 0.1
    # view 1 almost never sees past a point of view 0 (only at silhouettes, by pixel rounding):
    # this fails if depth were camera z or a camera convention were off
    assert ((other - d1) > 0.05).float().mean() < 0.05


def test_culled_equals_reference():
    sc = sample_scenes('chairs', torch.arange(3), device='cpu')
    o, d = get_rays(scene_cameras('chairs', torch.arange(3), 1, 20, device='cpu'))
    t_ref, s_ref = nearest_hit(sc, o[:, :1], d)
    t, s = culled_hit(sc, o[:, :1], d)
    assert torch.equal(t, t_ref)
    hit = torch.isfinite(t)
    assert hit.any() and torch.equal(s[hit], s_ref[hit])


def test_bad_input():
    with pytest.raises(ValueError, match='unknown family'):
        sample_scenes('boats', 0)
    with pytest.raises(ValueError, match='split must be one of'):
        scene_cameras('cars', 0, split='dev')
    with pytest.raises(ValueError, match='views must be >= 1'):
        scene_cameras('cars', 0, views=0)
    with pytest.raises(ValueError, match='scene indices'):
        sample_scenes('cars', -1)


# ---- datasets on disk ----

@pytest.fixture(scope='module')
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp('ds') / 'cars-val'
    return make_dataset('cars', 'val', n=10, res=16, out=root, views=3, device='cpu', progress=False, shard_mb=0.02)


def test_manifest_and_shards(built):
    m = read_manifest(built)
    assert m['params'] == dict(family='cars', split='val', n=10, res=16, views=3, seed=0, supersample=1, generator_version=m['generator_version'])
    assert m['counts'] == dict(scenes=10, views=3, images=30)
    assert len(m['shards']) > 1 and sum(s['count'] for s in m['shards']) == 10
    assert sorted(p.name for p in built.iterdir()) == sorted([s['file'] for s in m['shards']] + ['manifest.json'])


def test_disk_matches_memory(built):
    ds = SceneDataset(built, monocular=False)
    r = render_scenes('cars', torch.arange(10), views=3, res=16, split='val', device='cpu')
    q = ((r['image'] + 1) * 127.5).round() / 127.5 - 1
    for i in (0, 7, 29):
        s, v = divmod(i, 3)
        item = ds[i]
        torch.testing.assert_close(item['image'], q[s, v])
        torch.testing.assert_close(item['depth'], r['depth'][s, v], atol=4e-3, rtol=0)
        assert torch.equal(item['mask'], r['mask'][s, v]) and torch.equal(item['c2w'], r['c2w'][s, v])
        assert (item['scene'], item['view']) == (s, v)
    sc = ds.scene(4)
    assert sc['image'].shape == (3, 3, 16, 16) and len(sc['cameras']) == 3


def test_monocular_never_two_views(built):
    ds = SceneDataset(built)
    assert len(ds) == 10
    seen = [(int(s), int(v)) for b in torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True) for s, v in zip(b['scene'], b['view'])]
    assert sorted(s for s, _ in seen) == list(range(10)) and {v for _, v in seen} == {0}
    with pytest.raises(IndexError):
        ds[10]


def test_reuse_mismatch_overwrite(built, tmp_path):
    mtimes = {p.name: p.stat().st_mtime_ns for p in built.iterdir()}
    assert make_dataset('cars', 'val', n=10, res=16, out=built, views=3, device='cpu', progress=False, shard_mb=0.02) == built
    assert {p.name: p.stat().st_mtime_ns for p in built.iterdir()} == mtimes
    with pytest.raises(ValueError, match=r"res: 16 on disk, 24 asked.*views: 3 on disk, 1 asked"):
        make_dataset('cars', 'val', n=10, res=24, out=built, views=1, device='cpu', progress=False)
    other = tmp_path / 'x'
    make_dataset('clevr1', 'train', n=4, res=8, out=other, device='cpu', progress=False)
    make_dataset('clevr1', 'train', n=3, res=8, out=other, device='cpu', progress=False, overwrite=True)
    assert read_manifest(other)['params']['n'] == 3 and len(SceneDataset(other)) == 3


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / 'notes.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='notes.txt'):
        make_dataset('clevr1', 'train', n=2, res=8, out=tmp_path, device='cpu', progress=False)
    assert (tmp_path / 'notes.txt').read_text() == 'mine'


def test_resume_after_interruption(tmp_path):
    kw = dict(family='planes', split='train', n=6, res=8, out=tmp_path / 'p', device='cpu', progress=False, shard_mb=0.001)
    make_dataset(**kw)
    m = read_manifest(kw['out'])
    (kw['out'] / 'manifest.json').unlink()
    (kw['out'] / m['shards'][-1]['file']).unlink()
    make_dataset(**kw)
    assert read_manifest(kw['out'])['shards'] == m['shards']


def test_truncated_and_corrupt_shards(built, tmp_path):
    import shutil
    bad = tmp_path / 'bad'
    shutil.copytree(built, bad)
    f = bad / read_manifest(bad)['shards'][1]['file']
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f'{f.name} is corrupt or truncated'):
        SceneDataset(bad)
    f.write_bytes(bytes(data[:-40]))
    with pytest.raises(ValueError, match=f'{f.name} is corrupt or truncated'):
        SceneDataset(bad, verify=False)
    with pytest.raises(ValueError, match=f'{f.name} is missing or truncated'):
        make_dataset('cars', 'val', n=10, res=16, out=bad, views=3, device='cpu', progress=False, shard_mb=0.02)
    f.unlink()
    with pytest.raises(FileNotFoundError, match=f'{f.name} is missing'):
        SceneDataset(bad)


def test_bad_dataset_args(tmp_path):
    with pytest.raises(ValueError, match='n must be an int >= 1'):
        make_dataset('cars', 'train', n=0, res=8, out=tmp_path / 'a', progress=False)
    with pytest.raises(FileNotFoundError, match='no manifest.json'):
        SceneDataset(tmp_path)


# ---- standard formats ----

def _q(x):
    return ((x + 1) * 127.5).round() / 127.5 - 1


@pytest.mark.parametrize('family', ['chairs', 'planes'])
def test_srn_round_trip(family, tmp_path):
    s = render_scene(family, 3, views=4, res=20, device='cpu')
    export_srn(s, tmp_path, 'a')
    export_srn(render_scene(family, 4, views=2, res=20, device='cpu'), tmp_path, 'b')
    scenes = read_srn(tmp_path)
    assert [x['name'] for x in scenes] == ['a', 'b']
    torch.testing.assert_close(scenes[0]['image'], _q(s['image']), atol=1e-6, rtol=0)
    torch.testing.assert_close(scenes[0]['cameras'].c2w, s['cameras'].c2w, atol=1e-6, rtol=0)
    torch.testing.assert_close(scenes[0]['cameras'].K, s['cameras'].K, atol=1e-5, rtol=0)
    small = read_srn(tmp_path / 'a', res=10)[0]
    torch.testing.assert_close(small['cameras'].K[0, :2], s['cameras'].K[0, :2] / 2, atol=1e-5, rtol=0)
    with pytest.raises(FileExistsError):
        export_srn(s, tmp_path, 'a')


def test_nerf_round_trip_and_opengl(tmp_path):
    s = render_scene('cars', 2, views=3, res=20, device='cpu')
    path = export_nerf_synthetic(s, tmp_path, 'train')
    meta = json.loads(path.read_text())
    torch.testing.assert_close(torch.tensor(meta['frames'][0]['transform_matrix']).float(), convert_opengl(s['cameras'].c2w[0]))
    r = read_nerf_synthetic(tmp_path, 'train')
    torch.testing.assert_close(r['image'], _q(s['image']), atol=1e-6, rtol=0)
    torch.testing.assert_close(r['cameras'].c2w, s['cameras'].c2w, atol=1e-6, rtol=0)
    torch.testing.assert_close(r['cameras'].K, s['cameras'].K, atol=1e-4, rtol=0)
    assert torch.equal(r['mask'], s['mask'])
    # only camera_angle_x, as in the original Blender files
    for k in ('fl_x', 'fl_y', 'cx', 'cy', 'w', 'h'):
        meta.pop(k)
    (tmp_path / 'transforms_train.json').write_text(json.dumps(meta))
    torch.testing.assert_close(read_nerf_synthetic(tmp_path, 'train')['cameras'].K, s['cameras'].K, atol=1e-4, rtol=0)


def test_blender_camera_looks_along_minus_z(tmp_path):
    "A Blender camera with identity rotation at z = 4 looks down -z (OpenGL): our forward axis must be (0, 0, -1)."
    (tmp_path / 'train').mkdir()
    from PIL import Image
    Image.new('RGBA', (4, 4), (255, 0, 0, 255)).save(tmp_path / 'train' / 'r_0.png')
    T = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]
    (tmp_path / 'transforms_train.json').write_text(json.dumps(dict(camera_angle_x=0.69, frames=[dict(file_path='./train/r_0', transform_matrix=T)])))
    r = read_nerf_synthetic(tmp_path)
    torch.testing.assert_close(r['cameras'].c2w[0, :3, 2], torch.tensor([0., 0., -1.]))
    torch.testing.assert_close(r['cameras'].c2w[0, :3, 1], torch.tensor([0., -1., 0.]))
    assert torch.equal(r['image'][0, :, 0, 0], torch.tensor([1., -1., -1.]))


def test_format_bad_input(tmp_path):
    s = render_scene('cars', 0, views=2, res=8, device='cpu')
    K = s['cameras'].K.clone(); K[1, 0, 0] *= 2
    odd = dict(s, cameras=Cameras(K, s['cameras'].c2w, 8, 8))
    with pytest.raises(ValueError, match='same for every view'):
        export_srn(odd, tmp_path, 'x')
    export_srn(s, tmp_path, 'y')
    os.remove(tmp_path / 'y' / 'pose' / '000001.txt')
    with pytest.raises(FileNotFoundError, match='missing pose file'):
        read_srn(tmp_path)
    with pytest.raises(FileNotFoundError, match='transforms_test.json'):
        read_nerf_synthetic(tmp_path, 'test')


def test_multiview_dataset_checks():
    with pytest.raises(ValueError, match='K must have shape'):
        MultiViewDataset(torch.zeros(2, 1, 3, 4, 4, dtype=torch.uint8), torch.eye(3).expand(1, 1, 3, 3), look_at(torch.tensor([0., -3, 0]))[None])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_matches_cpu():
    a = render_scenes('chairs', torch.arange(4), views=2, res=32, device='cpu')
    b = render_scenes('chairs', torch.arange(4), views=2, res=32, device='cuda')
    assert (a['image'] - b['image'].cpu()).abs().gt(1e-3).float().mean() < 0.01
    torch.testing.assert_close(a['K'], b['K'].cpu())


def test_supersample(tmp_path):
    a = render_scene('cars', 0, views=2, res=16, device='cpu')
    b = render_scene('cars', 0, views=2, res=16, device='cpu', supersample=2)
    assert b['image'].shape == a['image'].shape and b['image'].min() >= -1 and b['image'].max() <= 1
    assert ((b['mask'] > 0) & (b['mask'] < 1)).any() and (b['object_mask'] <= b['mask'] + 1e-6).all()
    full = (b['mask'] == 1) & (a['mask'] == 1)
    assert (b['depth'] - a['depth'])[full].abs().median() < 0.02
    assert (b['depth'][b['mask'] == 0] == 0).all()
    with pytest.raises(ValueError, match='supersample must be an int >= 1'):
        render_scene('cars', 0, supersample=0, device='cpu')
    root = make_dataset('cars', 'test', n=2, res=8, out=tmp_path / 'aa', views=2, device='cpu', progress=False, supersample=2)
    item = SceneDataset(root)[1]
    assert ((item['mask'] > 0) & (item['mask'] < 1)).any()
    with pytest.raises(ValueError, match='supersample: 2 on disk, 1 asked'):
        make_dataset('cars', 'test', n=2, res=8, out=root, views=2, device='cpu', progress=False)


def test_overwrite_repairs_a_damaged_dataset(tmp_path):
    "The error messages say `overwrite=True` rebuilds a damaged dataset of the same parameters: it must."
    d = tmp_path / 'ds'
    make_dataset('clevr1', 'train', 4, 8, d, progress=False)
    shard = sorted(d.glob('*.safetensors'))[0]
    b = bytearray(shard.read_bytes()); b[-1] ^= 0xFF; shard.write_bytes(bytes(b))
    with pytest.raises(ValueError, match='overwrite=True'): SceneDataset(d)
    make_dataset('clevr1', 'train', 4, 8, d, progress=False, overwrite=True)
    assert len(SceneDataset(d)) == 4
    shard.unlink()
    with pytest.raises(ValueError, match='missing or truncated'): make_dataset('clevr1', 'train', 4, 8, d, progress=False)
    make_dataset('clevr1', 'train', 4, 8, d, progress=False, overwrite=True)
    assert len(SceneDataset(d)) == 4


def test_out_of_distribution_variants():
    from renderdiffusion_nb.scenes import rotate_hue
    a = render_scene('clevr1', 3, views=2, res=24, device='cpu')
    assert torch.equal(a['image'], render_scene('clevr1', 3, views=2, res=24, device='cpu', hue_shift=0.)['image'])
    b = render_scene('clevr1', 3, views=2, res=24, device='cpu', floor=(0.2, 0.5, 0.3))
    floor, obj = (a['mask'] > 0) & (a['object_mask'] == 0), a['object_mask'] > 0
    diff = (b['image'] - a['image']).abs().amax(1, keepdim=True)
    assert diff[floor].mean() > 0.3 and diff[obj].max() == 0 and torch.equal(a['depth'], b['depth'])
    x = torch.rand(16, 3)
    torch.testing.assert_close(rotate_hue(x, 1.0), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(rotate_hue(torch.full((1, 3), .4), .3), torch.full((1, 3), .4), atol=1e-6, rtol=0)
