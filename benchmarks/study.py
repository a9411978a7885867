"""Short training runs from scratch on fresh procedural scenes, scored on held-out views: the quality study.

Each arm is a `small` training run (captured step on a GPU) with some fields of its model or training config changed,
trained on `procedural:<family>` for `--images` images and scored every `--eval-every` images on held-out test
scenes (`--scenes` scenes x 4 views, view 0 the input, t_r = 0, EMA weights, PSNR on colours in [0, 1], images on
8-bit levels as in a data folder). Prints a table and writes every curve to JSON. Usage:

    python benchmarks/study.py --family clevr1 --arms base old_start --images 100000 --json study.json
    python benchmarks/study.py --arms base lr=4e-4 t_power=2 model.n_features=48 --images 200000

An arm is `base` (the preset as it is), `old_start` (the decoder's last layer drawn as it was before: std 0.01/sqrt(hidden),
zero bias), `two_view` (the upper bound, never shipped: each step's loss also renders a second view of the same scene from
the planes lifted from the first, so the network is told what the unseen side looks like; eager steps), `camera_input`
(the encoder also sees each pixel's ray of the input camera in Plucker coordinates, through a zero-initialised
convolution added to its first one: today the planes must be placed in world coordinates from the image alone), or
comma-separated `field=value` pairs (with the flags among them if wanted): training fields (`lr=4e-4`, `batch_size=64`,
`t_power=2`, `weighting=min_snr`, `init=renderdiffusion_nb/weights/chairs.safetensors` to continue a shipped model) and
model fields prefixed with `model.` (`model.n_features=48`, `model.decoder_hidden=128`, `model.unet=base`).
"""
from __future__ import annotations
import argparse
import ast
import datetime
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from renderdiffusion_nb.cameras import Cameras, get_rays
from renderdiffusion_nb.core import on_8bit_levels
from renderdiffusion_nb.model import RenderDiffusion, model_config, save_checkpoint
from renderdiffusion_nb.scenes import render_scenes
from renderdiffusion_nb.train import EMA, Trainer, _optimizer, chroma, loss_weights, train_config, x0_loss


FLAGS = ('base', 'old_start', 'two_view', 'camera_input')

def parse_arm(arm):
    "(train overrides, model overrides, flags) of an arm's name; flags is the set of `FLAGS` named in it."
    train, model, flags = {}, {}, set()
    for kv in arm.split(','):
        if kv in FLAGS:
            flags.add(kv)
            continue
        if '=' not in kv: raise SystemExit(f"an arm is {FLAGS} or field=value pairs, got {kv!r} in {arm!r}")
        k, v = kv.split('=', 1)
        try: v = ast.literal_eval(v)
        except (ValueError, SyntaxError): pass
        (model if k.startswith('model.') else train)[k.removeprefix('model.')] = v
    return train, model, flags


class TwoViewTrainer(Trainer):
    """The upper bound of the study (never shipped): a batch holds two views of each scene, x0 (b, 6, H, W), K (b, 2, 3, 3),
    c2w (b, 2, 4, 4). The first view is noised and lifted as in training; the loss is the mean of its x0 loss and the same
    weighted loss of the second view, rendered from the same planes. Steps run eagerly."""
    def _step_loss(self, x0, K, c2w, t, noise):
        c = self.config
        H, W = x0.shape[-2:]
        cams = [Cameras(K[:, v], c2w[:, v], H, W, check_values=False) for v in (0, 1)]
        kw = dict(jitter=c.jitter, backend=c.backend, precision='bf16' if self.autocast['enabled'] else 'fp32')
        with torch.autocast(**self.autocast):
            loss0, out = x0_loss(self.ddp, x0[:, :3], cams[0], t, noise, c.weighting, check_values=False, **kw)
            rgb1 = self.model.render(out['planes'], cams[1], check_values=False, **kw)['rgb']
            per_sample = (rgb1.float() - x0[:, 3:].float()).square().mean((1, 2, 3))
            return (loss0 + (loss_weights(self.model.schedule, t, c.weighting) * per_sample).mean()) / 2


class CameraStem(torch.nn.Module):
    """The encoder's first convolution plus a zero-initialised one of the input camera's rays (`rays`, set per call): the
    `camera_input` arm starts as the plain model and can learn to use where the camera is."""
    def __init__(self, stem):
        super().__init__()
        self.stem, self.cam, self.rays = stem, torch.nn.Conv2d(6, stem.out_channels, 3, padding=1), None
        torch.nn.init.zeros_(self.cam.weight)
        torch.nn.init.zeros_(self.cam.bias)

    def forward(self, x): return self.stem(x) + self.cam(self.rays)


def plucker(cams):
    "(B, 6, H, W): each pixel's unit ray direction d and its moment o x d (Plucker coordinates of the ray)."
    o, d = get_rays(cams)
    return torch.cat([d, torch.cross(o, d, dim=-1)], -1).transpose(1, 2).unflatten(2, (cams.H, cams.W))


def with_camera_input(model):
    "Give `model`'s encoder the rays of its input camera (`CameraStem`); returns the model, changed in place."
    model.encoder.stem = CameraStem(model.encoder.stem)
    forward = model.forward
    def camera_forward(x_t, t, cameras, **kw):
        model.encoder.stem.rays = plucker(cameras)
        return forward(x_t, t, cameras, **kw)
    model.forward = camera_forward
    return model


def two_view_batches(family, batch_size, steps, res, device, chunk=8192):
    "Batches of views 0 and 1 of fresh training scenes (step s: scenes [sB, (s+1)B)), images on 8-bit levels."
    per = max(1, chunk // (2 * batch_size))
    for s0 in range(0, steps, per):
        n = min(steps, s0 + per) - s0
        r = render_scenes(family, torch.arange(s0 * batch_size, (s0 + n) * batch_size), views=2, res=res, device=device)
        x0, K, c2w = on_8bit_levels(r['image']).flatten(1, 2), r['K'].float(), r['c2w'].float()
        for i in range(n):
            sl = slice(i * batch_size, (i + 1) * batch_size)
            yield x0[sl], K[sl], c2w[sl]


def arm_name(arm):
    "A file-name-safe form of an arm's name (letters, digits, '.', '_' and '-')."
    return ''.join(ch if ch.isalnum() or ch in '.-' else '_' for ch in arm)


def held_out(family, n, res, device):
    "n test scenes x 4 views: images on 8-bit levels (B, V, 3, H, W), cameras (B*V)."
    r = render_scenes(family, torch.arange(n), views=4, res=res, split='test', device=device)
    return on_8bit_levels(r['image']), Cameras(r['K'].reshape(-1, 3, 3).float(), r['c2w'].reshape(-1, 4, 4).float(), res, res), r['object_mask']


@torch.no_grad()
def score(model, img, cams, obj):
    "Mean PSNR of the input view and of the novel views, and object-pixel chroma (predicted, true), reconstructing at t_r = 0."
    B, V = img.shape[:2]
    x0 = img[:, 0]
    t = torch.zeros(B, dtype=torch.long, device=x0.device)
    planes = model(x0, t, cams[torch.arange(B) * V])['planes']
    pred = model.render(planes.repeat_interleave(V, 0), cams)['rgb']
    pred, true = (pred.view(B, V, 3, *x0.shape[-2:]) + 1) / 2, (img + 1) / 2
    mse = (pred.clamp(0, 1) - true).square().mean((2, 3, 4))
    psnr = -10 * torch.log10(mse)
    m = obj[:, :, 0] > 0.5
    return dict(input_psnr=psnr[:, 0].mean().item(), novel_psnr=psnr[:, 1:].mean().item(),
                chroma_pred=chroma(pred.flatten(0, 1))[m.flatten(0, 1)].mean().item(),
                chroma_true=chroma(true.flatten(0, 1))[m.flatten(0, 1)].mean().item())


def run_arm(arm, a, dev, root, test):
    train_kw, model_kw, flags = parse_arm(arm)
    mc = model_config(a.preset, **model_kw)
    B = train_kw.pop('batch_size', a.batch_size)
    steps = math.ceil(a.images / B)
    cfg = train_config(a.preset, model=mc, data=f'procedural:{a.family}', out=str(root / arm_name(arm)),
                       steps=steps, batch_size=B, warmup=min(500, steps // 10), log_every=50, ckpt_every=10**9, grid_every=0,
                       progress=False, device=str(dev), **{'eager': 'two_view' in flags, **train_kw})
    tr = (TwoViewTrainer if 'two_view' in flags else Trainer)(cfg)
    if 'old_start' in flags:
        with torch.no_grad():
            h = tr.model.decoder.fc2.in_features
            tr.model.decoder.fc2.weight.normal_(0, 0.01 / math.sqrt(h)); tr.model.decoder.fc2.bias.zero_()
        tr.ema = EMA(tr.model, cfg.ema_decay)
    if 'camera_input' in flags: # new weights: the optimizer and the EMA are made again
        with_camera_input(tr.model).to(dev)
        tr.opt, tr.ema = _optimizer(tr.model, cfg, dev), EMA(tr.model, cfg.ema_decay)
    every = max(1, round(a.eval_every / B))
    curve, t0, gpu_s = [], time.perf_counter(), 0.0
    ema_model = RenderDiffusion(mc)
    if 'camera_input' in flags: with_camera_input(ema_model)
    ema_model = ema_model.to(dev).eval()
    batches = two_view_batches(a.family, B, steps, mc.image_size, dev) if 'two_view' in flags else tr._batches()
    for batch in batches:
        tr.train_step(*batch)
        if tr.step % every == 0 or tr.step == steps:
            st = tr._read_stats()
            gpu_s += time.perf_counter() - t0
            ema_model.load_state_dict(tr.ema.state_dict())
            sc = score(ema_model, *test)
            curve.append(dict(step=tr.step, images=tr.step * B, loss=st['loss'], train_s=round(gpu_s, 1), **sc))
            print(json.dumps({'arm': arm, **curve[-1]}), flush=True)
            if a.save: save_checkpoint(Path(a.save) / f'{a.family}-{arm_name(arm)}.safetensors', ema_model, dtype=torch.float16, overwrite=True,
                                       state={'images': tr.step * B, 'train_s': curve[-1]['train_s'], 'arm': arm, 'weights': 'ema'})
            t0 = time.perf_counter()
    return dict(arm=arm, family=a.family, batch=B, images=steps * B, lr=cfg.lr, captured=tr.graph is not None, curve=curve)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--family', default='clevr1')
    p.add_argument('--preset', default='small', help='training preset (the model preset of the same name)')
    p.add_argument('--arms', nargs='+', default=['base', 'old_start'])
    p.add_argument('--images', type=int, default=100_000, help='training images per arm')
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--eval-every', type=int, default=25_000, help='images between held-out scores')
    p.add_argument('--scenes', type=int, default=64, help='held-out test scenes')
    p.add_argument('--device', default=None)
    p.add_argument('--json', default=None)
    p.add_argument('--save', default=None, help="folder for each arm's final EMA weights (float16)")
    a = p.parse_args(argv)
    dev = torch.device(a.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    test = held_out(a.family, a.scenes, model_config(a.preset).image_size, dev)
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'
    head = f"{name}, torch {torch.__version__}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for arm in a.arms:
            rows.append(run_arm(arm, a, dev, Path(d), test))
            if a.json: Path(a.json).write_text(json.dumps(dict(device=head, family=a.family, scenes=a.scenes, arms=rows), indent=1))
    print(f"\n{a.family}: held-out {a.scenes} scenes x 4 views, t_r = 0, EMA weights; {head}\n")
    print('| arm | images | train s | loss | input PSNR | novel PSNR | object chroma (true) |')
    print('| --- | --- | --- | --- | --- | --- | --- |')
    for r in rows:
        c = r['curve'][-1]
        print(f"| {r['arm']} | {c['images']} | {c['train_s']:.0f} | {c['loss']:.4f} | {c['input_psnr']:.2f} | "
              f"{c['novel_psnr']:.2f} | {c['chroma_pred']:.3f} ({c['chroma_true']:.3f}) |")


if __name__ == '__main__':
    main()
