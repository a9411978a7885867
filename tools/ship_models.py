"""Put trained models into the package: fp16 weights plus a model card (JSON) each, and weights/README.md.

Takes the run folders of one or more training phases (a later phase started from the earlier one's
weights with `init=`), the exported weights and the `rd-eval` results, e.g.:

    python tools/ship_models.py --runs runs/phase1 runs/phase2 --weights export/ --eval eval/ \\
        --device "NVIDIA H100 80GB HBM3" --date 2026-11-25

Each run folder holds `<name>/config.json` and `<name>/log.jsonl`; `--weights` holds `<name>-64.safetensors`;
`--eval` holds `<family>/results.json`. Existing model files are replaced only with `--overwrite`.
"""
from __future__ import annotations
import argparse
import hashlib
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / 'renderdiffusion_nb' / 'weights'
MODELS = {
    'clevr1': ('clevr1', 'RenderDiffusion'),
    'chairs': ('chairs', 'RenderDiffusion'),
    'clevr1-det': ('clevr1', 'deterministic baseline'),
    'chairs-det': ('chairs', 'deterministic baseline'),
}
KEEP = ('steps', 'batch_size', 'lr', 'warmup', 'min_lr_frac', 'weight_decay', 'grad_clip', 'ema_decay', 'weighting', 't_max',
        't_power', 'jitter', 'precision', 'backend', 'seed')


def phase(run: Path) -> dict:
    "What one training phase did: its settings, steps, logged training time, last loss and rate."
    cfg = json.loads((run / 'config.json').read_text())
    recs = [json.loads(l) for l in (run / 'log.jsonl').read_text().splitlines() if l.strip()]
    seconds, prev = 0.0, 0
    for r in recs:
        seconds += (r['step'] - prev) * cfg['batch_size'] / r['images_per_s']
        prev = r['step']
    first = recs[0]['step'] - (recs[1]['step'] - recs[0]['step']) if len(recs) > 1 else 0
    return {'settings': {k: cfg.get(k) for k in KEEP}, 'init': Path(cfg['init']).name if cfg.get('init') else None,
            'steps': recs[-1]['step'], 'train_seconds': round(seconds), 'final_loss': round(recs[-1]['loss'], 4),
            'images_per_s': round(sum(r['images_per_s'] for r in recs[len(recs) // 2:]) / len(recs[len(recs) // 2:]), 1),
            'model': cfg['model'], 'data': Path(cfg['data']).name, 'start_step': max(first, 0)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--runs', nargs='+', type=Path, required=True, help='run folders of the training phases, in order')
    ap.add_argument('--weights', type=Path, required=True)
    ap.add_argument('--eval', type=Path, required=True)
    ap.add_argument('--device', required=True)
    ap.add_argument('--date', required=True)
    ap.add_argument('--concurrent', default='', help='note on how the GPU was shared while training')
    ap.add_argument('--overwrite', action='store_true')
    a = ap.parse_args()
    DEST.mkdir(exist_ok=True)
    cards = {}
    for name, (family, method) in MODELS.items():
        src = a.weights / f'{name}-64.safetensors'
        dst = DEST / f'{name}.safetensors'
        if dst.exists() and not a.overwrite: raise SystemExit(f'{dst} exists; pass --overwrite to replace it')
        shutil.copyfile(src, dst)
        phases = [phase(r / name) for r in a.runs]
        rows = json.loads((a.eval / family / 'results.json').read_text())
        own = [r for r in rows if r['method'].startswith(method) or (method == 'RenderDiffusion' and r['method'].startswith('RenderDiffusion'))]
        floor = [r for r in rows if r['method'] == 'mean training image']
        data = dict(family=family, train_scenes=20000, views_per_scene=1, resolution=64, generator='renderdiffusion_nb.data.make_dataset',
                    split='train', test='64 held-out scenes x 4 views (split test), view 0 is the input')
        card = {'name': name, 'file': dst.name, 'bytes': dst.stat().st_size, 'sha256': hashlib.sha256(dst.read_bytes()).hexdigest(),
                'family': family, 'method': method, 'weights': 'EMA, float16', 'model': phases[-1]['model'], 'data': data,
                'steps': sum(p['steps'] - p['start_step'] for p in phases), 'train_seconds': sum(p['train_seconds'] for p in phases),
                'device': a.device, 'date': a.date, 'concurrent': a.concurrent,
                'phases': [{k: v for k, v in p.items() if k != 'model'} for p in phases],
                'metrics': [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in own + floor]}
        (DEST / f'{name}.json').write_text(json.dumps(card, indent=1) + '\n')
        cards[name] = card
    (DEST / 'README.md').write_text(readme(cards))
    print('\n'.join(f"{n}: {c['bytes'] / 2**20:.1f} MiB, {c['steps']} steps" for n, c in cards.items()))


def readme(cards: dict) -> str:
    "The model cards as Markdown."
    out = ['# Shipped models', '',
           'Trained with `renderdiffusion_nb.train` on procedural data (`renderdiffusion_nb.data`), strictly monocular:',
           'one view of each training scene is ever seen. Load one with `load_pretrained(name)`; each file is checked',
           'against the SHA-256 in its card first. Numbers are on held-out scenes and held-out views (`rd-eval`).', '']
    for n, c in cards.items():
        out += [f"## `{n}`: {c['method']} on `{c['family']}`", '',
                f"- data: {c['data']['train_scenes']:,} `{c['family']}` scenes at 64x64, one view each; evaluated on {c['data']['test']}",
                f"- model: `small` preset ({c['model']['unet']['channels']}-channel U-Net, triplane {c['model']['triplane_res']}x{c['model']['triplane_res']}x{c['model']['n_features']}, "
                f"{c['model']['n_coarse']}+{c['model']['n_fine']} samples per ray); weights: {c['weights']}, {c['bytes'] / 2**20:.1f} MiB",
                f"- training: {c['steps']:,} steps of batch {c['phases'][0]['settings']['batch_size']} in {len(c['phases'])} phase(s), "
                f"{c['train_seconds'] / 60:.0f} min on one {c['device']} ({c['date']}){'; ' + c['concurrent'] if c['concurrent'] else ''}"]
        for i, p in enumerate(c['phases']):
            s = p['settings']
            what = f"t_max={s['t_max']} (no noise)" if s['t_max'] == 0 else f"t_power={s['t_power']}"
            out.append(f"  - phase {i + 1}: steps {p['start_step']}-{p['steps']}, lr {s['lr']} (warm-up {s['warmup']}, cosine), {what}, seed {s['seed']}"
                       f"{', from ' + p['init'] if p['init'] else ', from random weights'}; final loss {p['final_loss']}, {p['images_per_s']} images/s")
        out += ['', '| method | t_r | input PSNR | novel PSNR | input SSIM | novel SSIM | novel depth MAE |', '| --- | --- | --- | --- | --- | --- | --- |']
        f = lambda r, k, fmt: fmt.format(r[k]) if r.get(k) is not None else '-'
        out += [f"| {r['method']} | {f(r, 't_r', '{}')} | {f(r, 'input_psnr', '{:.2f}')} | {f(r, 'novel_psnr', '{:.2f}')} | {f(r, 'input_ssim', '{:.3f}')} "
                f"| {f(r, 'novel_ssim', '{:.3f}')} | {f(r, 'novel_depth_mae', '{:.3f}')} |" for r in c['metrics'] if r.get('input_psnr') is not None]
        out.append('')
    return '\n'.join(out)


if __name__ == '__main__':
    main()
