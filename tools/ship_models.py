"""Put trained models into the package: fp16 weights plus a model card (JSON) each, and weights/README.md.

Takes the run folders of one or more training phases (a later phase started from the earlier one's
weights with `init=`), the exported weights and the `rd-eval` results, e.g.:

    python tools/ship_models.py --runs runs/phase1 runs/phase2 --weights export/ --eval eval/ \\
        --device "NVIDIA H100 80GB HBM3" --date 2026-11-25

Each run folder holds `<name>/config.json` and `<name>/log.jsonl`; `--weights` holds `<name>-64.safetensors`;
`--eval` holds `<family>/results.json`. Existing model files are replaced only with `--overwrite`.

A model trained by `benchmarks/study.py` (fresh procedural scenes, weights saved by `--save`) ships with `--study`:

    python tools/ship_models.py --study results.json --arm "t_power=2,lr=5e-4" --name clevr1 --weights w.safetensors \
        --eval eval_a/results.json eval_b/results.json --device "NVIDIA H200" --date 2026-12-02 --overwrite

Every card records the images seen and the GPU time over all of the model's runs (`images_seen`, `gpu_seconds`).

A deterministic baseline (a `-det` name: the same network trained with `--t_max 0`) ships its card alone, in
`weights/baselines/`: its weights are not copied (the package's weights stay under 40 MB), so `--weights` is optional
for it and its card's `file`, `bytes` and `sha256` are null. A model shipped for the first time (no card yet) takes its
`model` from the `small` preset with the arm's `model.` fields, as study.py builds it.

Only README.md, from the cards as they are (e.g. after editing one by hand):

    python tools/ship_models.py --readme
"""
from __future__ import annotations
import argparse
import hashlib
import json
import math
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / 'renderdiffusion_nb' / 'weights'
MODELS = {
    'clevr1': ('clevr1', 'RenderDiffusion'),
    'chairs': ('chairs', 'RenderDiffusion'),
    'cars': ('cars', 'RenderDiffusion'),
    'planes': ('planes', 'RenderDiffusion'),
    'clevr1-det': ('clevr1', 'deterministic baseline'),
    'chairs-det': ('chairs', 'deterministic baseline'),
    'cars-det': ('cars', 'deterministic baseline'),
    'planes-det': ('planes', 'deterministic baseline'),
}
LEGACY = ('clevr1', 'chairs', 'clevr1-det', 'chairs-det') # the models the `--runs` path knows (trained on a 20,000-scene data set)
NOT_SHIPPED = ("EMA, float16; not shipped, to keep the package's weights under 40 MB: only its numbers are recorded here. "
               "Train one with `rd-train <data> <run folder> --t_max 0` and the settings in `phases`") # a baseline card's `weights`
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


def is_baseline(name: str) -> bool:
    "A deterministic baseline: its card is recorded in `baselines/`, its weights are not shipped."
    return MODELS[name][1] == 'deterministic baseline'


def card_path(name: str) -> Path:
    "Where `name`'s card lives: `weights/<name>.json`, or `weights/baselines/<name>.json` for a baseline."
    return DEST / 'baselines' / f'{name}.json' if is_baseline(name) else DEST / f'{name}.json'


def target(name: str) -> Path:
    "The file that shipping `name` creates and `--overwrite` guards: its weights, or a baseline's card."
    return card_path(name) if is_baseline(name) else DEST / f'{name}.safetensors'


def write_card(name: str, weights: Path | None, card: dict) -> dict:
    "Copy `name`'s weights beside its card (a baseline: the card alone, with no file), write the card and return it."
    if is_baseline(name): head, card = dict(file=None, bytes=None, sha256=None), dict(card, weights=NOT_SHIPPED)
    else:
        dst = DEST / f'{name}.safetensors'
        shutil.copyfile(weights, dst)
        head = dict(file=dst.name, bytes=dst.stat().st_size, sha256=hashlib.sha256(dst.read_bytes()).hexdigest())
    card = {'name': name, **head, **card}
    card_path(name).parent.mkdir(parents=True, exist_ok=True)
    card_path(name).write_text(json.dumps(card, indent=1) + '\n')
    return card


def size(card: dict) -> str:
    "What shipping a card puts in the package, for the tool's summary line."
    return 'card only' if card['bytes'] is None else f"{card['bytes'] / 2**20:.1f} MiB"


def read_cards() -> tuple[dict, dict]:
    "The shipped models' cards and the baselines' cards, in `MODELS` order."
    cards = {n: json.loads(card_path(n).read_text()) for n in MODELS if card_path(n).exists()}
    return {n: c for n, c in cards.items() if not is_baseline(n)}, {n: c for n, c in cards.items() if is_baseline(n)}


def write_readme():
    "weights/README.md from the cards as they are."
    (DEST / 'README.md').write_text(readme(*read_cards()))


def preset_model(overrides: dict) -> dict:
    "The `small` model preset with an arm's `model.` fields, as a card stores it: the model study.py trains."
    sys.path.insert(0, str(ROOT)) # this repository's package, installed or not
    from renderdiffusion_nb.model import model_config
    return json.loads(json.dumps(model_config('small', **overrides).to_dict()))


def ship_study(a):
    "Ship one model of a study run: its weights (a baseline: none), a card from the study's curve and settings, its rd-eval rows, the README."
    study = json.loads(a.study.read_text())
    arm = next((r for r in study['arms'] if r['arm'] == a.arm), None)
    if arm is None: raise SystemExit(f"no arm {a.arm!r} in {a.study}; its arms: {', '.join(r['arm'] for r in study['arms'])}")
    family, method = MODELS[a.name]
    if a.weights is None and not is_baseline(a.name):
        raise SystemExit(f"--weights is required for {a.name} ({method}: its weights ship); only a -det baseline ships without them")
    if a.weights is not None and is_baseline(a.name): print(f"{a.name} is a baseline: its card alone ships, {a.weights} is not copied")
    dst = target(a.name)
    if dst.exists() and not a.overwrite: raise SystemExit(f'{dst} exists; pass --overwrite to replace it')
    old = json.loads(card_path(a.name).read_text()) if card_path(a.name).exists() else {}
    rows = [r for e in a.eval for r in json.loads(e.read_text())]
    own = [r for r in rows if r['method'].startswith(method)]
    floor = [r for r in rows if r['method'] == 'mean training image'] # a property of the data: from this evaluation, else kept
    floor = floor or [r for r in old.get('metrics', []) if r['method'] == 'mean training image']
    last, planned = arm['curve'][-1], math.ceil(arm['images'] / arm['batch']) # the last score; the steps its schedule was made for
    settings = dict(steps=planned, batch_size=arm['batch'], lr=arm['lr'], warmup=min(500, planned // 10), t_max=None, t_power=1.0,
                    weighting='uniform', seed=0) # study.py's settings for a `small` run
    for kv in a.arm.split(','): # the arm's own fields, as the study parsed them
        k, _, v = kv.partition('=')
        if v: settings[k] = json.loads(v) if v[0].isdigit() or v[0] in '-.' else v
    model = {k.removeprefix('model.'): v for k, v in settings.items() if k.startswith('model.')} # the arm's model fields
    if is_baseline(a.name) and settings['t_max'] != 0:
        raise SystemExit(f"{a.name} is a deterministic baseline, trained at t = 0 only, but --arm {a.arm!r} does not set t_max=0")
    init = settings.pop('init', None)
    this = {'settings': settings, 'init': Path(init).name if init else None, 'steps': last['step'], 'train_seconds': round(last['train_s']),
            'final_loss': round(last['loss'], 4), 'images_per_s': round(last['images'] / last['train_s'], 1),
            'data': f'procedural:{family}', 'start_step': 0, 'images': last['images'], 'device': a.device, 'date': a.date}
    stopped = f"stopped at step {last['step']} of its schedule's {planned}" if last['step'] < planned else ''
    if a.concurrent: this['concurrent'] = a.concurrent
    if stopped or a.note: this['note'] = '; '.join(n for n in (stopped, a.note) if n)
    data = dict(family=family, train_scenes=last['images'], views_per_scene=1, resolution=64,
                generator=f'procedural:{family} (fresh scenes every step, split train)',
                test='64 held-out scenes x 4 views (split test), view 0 is the input')
    before = []
    if init: # a continued model: the earlier phases (the card of the weights it started from) come first and count in the totals
        if Path(init).name != f'{a.name}.safetensors' or not old: raise SystemExit(f'--arm continues {init}, not the shipped {a.name}')
        same = lambda p: all(p.get(k) == this[k] for k in ('init', 'steps', 'data', 'date', 'images')) # this run, shipped before
        before = [dict(p, images=p.get('images', (p['steps'] - p['start_step']) * p['settings']['batch_size']),
                       device=p.get('device', old['device']), date=p.get('date', old['date']),
                       generator=p.get('generator', old['data']['generator']), concurrent=p.get('concurrent', old.get('concurrent', '')))
                  for p in old['phases'] if not same(p)]
        data['train_scenes'] = max(last['images'], old['data']['train_scenes'])
        this['generator'] = f"{data['generator']}, the same scene stream"
        data['generator'] = '; then '.join(f"phase {i + 1}: {p['generator']}" for i, p in enumerate(before + [this]))
    phases = before + [this]
    card = {'family': family, 'method': method, 'weights': 'EMA, float16', 'model': old.get('model') or preset_model(model), 'data': data,
            'steps': sum(p['steps'] - p['start_step'] for p in phases), 'train_seconds': sum(p['train_seconds'] for p in phases),
            'images_seen': sum(p['images'] for p in phases), 'gpu_seconds': sum(p['train_seconds'] for p in phases),
            'device': ', '.join(dict.fromkeys(p['device'] for p in phases)), 'date': a.date,
            'concurrent': '; '.join(f"phase {i + 1}: {p['concurrent']}" for i, p in enumerate(phases) if p.get('concurrent')),
            'phases': phases,
            'metrics': [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in own + floor]}
    card = write_card(a.name, a.weights, card)
    write_readme()
    print(f"{a.name}: {size(card)}, {card['steps']} steps, {card['images_seen']:,} images, {card['gpu_seconds']} GPU-s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if sys.argv[1:] == ['--readme']: return write_readme()
    if '--study' in sys.argv:
        ap.add_argument('--study', type=Path, required=True, help="a study's JSON (benchmarks/study.py --json)")
        ap.add_argument('--arm', required=True, help='the arm whose weights ship')
        ap.add_argument('--name', required=True, choices=sorted(MODELS))
        ap.add_argument('--weights', type=Path, help="the arm's weights (study.py --save); required unless --name is a -det baseline")
        ap.add_argument('--eval', type=Path, nargs='+', required=True, help='rd-eval results.json files')
        ap.add_argument('--device', required=True)
        ap.add_argument('--date', required=True)
        ap.add_argument('--concurrent', default='', help='how the GPU was shared during this run, if it was')
        ap.add_argument('--note', default='', help="what else the phase's line should say (e.g. a run stopped before its schedule's end)")
        ap.add_argument('--overwrite', action='store_true')
        return ship_study(ap.parse_args())
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
    for name in LEGACY:
        family, method = MODELS[name]
        dst = target(name)
        if dst.exists() and not a.overwrite: raise SystemExit(f'{dst} exists; pass --overwrite to replace it')
        phases = [phase(r / name) for r in a.runs]
        rows = json.loads((a.eval / family / 'results.json').read_text())
        own = [r for r in rows if r['method'].startswith(method) or (method == 'RenderDiffusion' and r['method'].startswith('RenderDiffusion'))]
        floor = [r for r in rows if r['method'] == 'mean training image']
        data = dict(family=family, train_scenes=20000, views_per_scene=1, resolution=64, generator='renderdiffusion_nb.data.make_dataset',
                    split='train', test='64 held-out scenes x 4 views (split test), view 0 is the input')
        card = {'family': family, 'method': method, 'weights': 'EMA, float16', 'model': phases[-1]['model'], 'data': data,
                'steps': sum(p['steps'] - p['start_step'] for p in phases), 'train_seconds': sum(p['train_seconds'] for p in phases),
                'device': a.device, 'date': a.date, 'concurrent': a.concurrent,
                'phases': [{k: v for k, v in p.items() if k != 'model'} for p in phases],
                'metrics': [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in own + floor]}
        cards[name] = write_card(name, a.weights / f'{name}-64.safetensors', card)
    write_readme()
    print('\n'.join(f"{n}: {size(c)}, {c['steps']} steps" for n, c in cards.items()))


def section(n: str, c: dict, level: str = '##') -> list:
    "One model's card as Markdown lines: data, model, training, its phases and its metric table."
    images = c.get('images_seen', sum((p['steps'] - p['start_step']) * p['settings']['batch_size'] for p in c['phases']))
    # fresh: every image a new scene (a continued run restarts the stream, so its phases can see scenes again)
    fresh = all(p.get('data', '').startswith('procedural:') for p in c['phases']) and images == c['data']['train_scenes']
    gpu = c.get('gpu_seconds', c['train_seconds'])
    weights = 'not shipped' if c['file'] is None else f"{c['weights']}, {c['bytes'] / 2**20:.1f} MiB"
    out = [f"{level} `{n}`: {c['method']} on `{c['family']}`", '',
           f"- data: {c['data']['train_scenes']:,} `{c['family']}` scenes at 64x64, one view each"
           f"{' (fresh procedural scenes every step: no scene seen twice)' if fresh else ''}; evaluated on {c['data']['test']}",
           f"- model: `small` preset ({c['model']['unet']['channels']}-channel U-Net, triplane {c['model']['triplane_res']}x{c['model']['triplane_res']}x{c['model']['n_features']}, "
           f"{c['model']['n_coarse']}+{c['model']['n_fine']} samples per ray); weights: {weights}",
           f"- training: {c['steps']:,} steps in {len(c['phases'])} phase(s), "
           f"{c['train_seconds'] / 60:.0f} min on one GPU at a time ({c['device']}; {c['date']}){'; ' + c['concurrent'] if c['concurrent'] else ''}",
           f"- in all: {images:,} images seen, {gpu / 60:.1f} GPU-minutes"]
    for i, p in enumerate(c['phases']):
        s = p['settings']
        what = f"t_max={s['t_max']} (no noise)" if s.get('t_max') == 0 else f"t_power={s.get('t_power', 1.0)}"
        out.append(f"  - phase {i + 1}: steps {p['start_step']}-{p['steps']} of batch {s['batch_size']}, lr {s['lr']} (warm-up {s.get('warmup', 'min(500, steps / 10)')}, cosine), "
                   f"{what}, seed {s.get('seed', 0)}"
                   f"{', from ' + p['init'] if p['init'] else ', from random weights'}; final loss {p['final_loss']}, {p['images_per_s']} images/s"
                   f"{', ' + p['device'] + ', ' + p['date'] if p.get('device') else ''}{'; ' + p['note'] if p.get('note') else ''}")
    out += ['', '| method | t_r | input PSNR | novel PSNR | input SSIM | novel SSIM | novel depth MAE |', '| --- | --- | --- | --- | --- | --- | --- |']
    f = lambda r, k, fmt: fmt.format(r[k]) if r.get(k) is not None else '-'
    out += [f"| {r['method']} | {f(r, 't_r', '{}')} | {f(r, 'input_psnr', '{:.2f}')} | {f(r, 'novel_psnr', '{:.2f}')} | {f(r, 'input_ssim', '{:.3f}')} "
            f"| {f(r, 'novel_ssim', '{:.3f}')} | {f(r, 'novel_depth_mae', '{:.3f}')} |" for r in c['metrics'] if r.get('input_psnr') is not None]
    return out + ['']


def readme(cards: dict, baselines: dict | None = None) -> str:
    "The model cards as Markdown: the shipped models, then the baselines whose numbers alone are recorded."
    out = ['# Shipped models', '',
           'Trained with `renderdiffusion_nb.train` on procedural scenes (`renderdiffusion_nb.scenes`), strictly monocular:',
           'one view of each training scene is ever seen. Load one with `load_pretrained(name)`; each file is checked',
           'against the SHA-256 in its card first. Numbers are on held-out scenes and held-out views (`rd-eval`).', '']
    for n, c in cards.items(): out += section(n, c)
    if not baselines: return '\n'.join(out)
    out += ['## Deterministic baselines (numbers only)', '',
            'The same network trained at t = 0 only (`rd-train <data> <run folder> --t_max 0`): the deterministic single-view',
            "reconstructor the paper compares with. Their weights are not shipped, to keep the package's weights under 40 MB;",
            'their cards in `baselines/` (`recorded_baselines()`) record how they were trained and what they measured.', '']
    for n, c in baselines.items(): out += section(n, c, '###')
    return '\n'.join(out)

if __name__ == '__main__':
    main()
