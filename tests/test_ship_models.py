"""tools/ship_models.py --study: a new model's card, a continued model's card that keeps and sums the earlier phases, and a
deterministic baseline, whose card alone is recorded (in weights/baselines/, no weights)."""
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ship(tmp_path, monkeypatch):
    "The tool as a module, writing into a copy of the shipped cards under tmp_path."
    spec = importlib.util.spec_from_file_location('ship_models', ROOT / 'tools' / 'ship_models.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    dest = tmp_path / 'weights'
    shutil.copytree(mod.DEST, dest, ignore=shutil.ignore_patterns('*.safetensors'))
    monkeypatch.setattr(mod, 'DEST', dest)
    return mod, tmp_path


def study_files(tmp, arm, images=600_064, batch=128, train_s=470.0, family='chairs', method='RenderDiffusion'):
    "A study.py JSON with one arm, its weights file and an rd-eval results file."
    curve = [dict(step=images // batch, images=images, loss=0.025, train_s=train_s, input_psnr=27.2, novel_psnr=21.1)]
    (tmp / 'study.json').write_text(json.dumps(dict(arms=[dict(arm=arm, family=family, batch=batch, images=images, lr=5e-4,
                                                                 captured=True, curve=curve)])))
    (tmp / 'w.safetensors').write_bytes(b'weights')
    (tmp / 'eval.json').write_text(json.dumps([dict(family=family, method=method, t_r=0, input_psnr=27.24,
                                                    novel_psnr=21.11, n_scenes=64)]))


def run(mod, tmp, arm, name='chairs', weights=True):
    sys_argv = ['ship_models.py', '--study', str(tmp / 'study.json'), '--arm', arm, '--name', name,
                *(['--weights', str(tmp / 'w.safetensors')] if weights else []),
                '--eval', str(tmp / 'eval.json'), '--device', 'GPU X', '--date', '2026-12-02', '--overwrite']
    old, sys.argv = sys.argv, sys_argv
    try: mod.main()
    finally: sys.argv = old
    return json.loads(mod.card_path(name).read_text())


def test_continued_card_keeps_and_sums_earlier_phases_once(ship):
    mod, tmp = ship
    card = json.loads((mod.DEST / 'chairs.json').read_text()) # as first shipped: one phase on a fixed data set
    p1 = {k: v for k, v in card['phases'][0].items() if k not in ('generator', 'concurrent')}
    card.update(phases=[p1], data=dict(card['data'], generator='renderdiffusion_nb.data.make_dataset'), concurrent='shared GPU')
    (mod.DEST / 'chairs.json').write_text(json.dumps(card))
    arm = 'init=renderdiffusion_nb/weights/chairs.safetensors,t_power=2,lr=5e-4'
    study_files(tmp, arm)
    first = run(mod, tmp, arm)
    assert len(first['phases']) == 2 and first['phases'][-1]['init'] == 'chairs.safetensors'
    assert first['concurrent'] == 'phase 1: shared GPU'
    assert first['data']['generator'].startswith('phase 1: renderdiffusion_nb.data.make_dataset; then phase 2: procedural:chairs')
    assert first['images_seen'] == sum(p['images'] for p in first['phases'])
    assert first['phases'][-1]['images'] == 600_064 and first['phases'][-1]['settings']['t_power'] == 2
    assert first['gpu_seconds'] == sum(p['train_seconds'] for p in first['phases'])
    again = run(mod, tmp, arm) # shipping the same run again replaces it: no phase counted twice
    assert [p['steps'] for p in again['phases']] == [p['steps'] for p in first['phases']]
    assert again['images_seen'] == first['images_seen'] and again['data']['generator'] == first['data']['generator']
    assert again['concurrent'] == first['concurrent']


def test_new_card_has_one_phase_and_a_continuation_must_name_the_shipped_model(ship):
    mod, tmp = ship
    study_files(tmp, 't_power=2,lr=5e-4', images=400_000, train_s=311.0)
    card = run(mod, tmp, 't_power=2,lr=5e-4')
    assert len(card['phases']) == 1 and card['images_seen'] == 400_000 and card['gpu_seconds'] == 311
    arm = 'init=renderdiffusion_nb/weights/clevr1.safetensors,lr=5e-4'
    study_files(tmp, arm)
    with pytest.raises(SystemExit, match='not the shipped chairs'): run(mod, tmp, arm)


def test_a_baseline_ships_its_card_alone(ship, monkeypatch):
    "A -det name: its card goes to baselines/ with no file, nothing is copied, and the README lists it under the baselines."
    mod, tmp = ship
    files = lambda: sorted(str(p.relative_to(mod.DEST)) for p in mod.DEST.rglob('*') if p.is_file())
    (mod.DEST / 'baselines' / 'cars-det.json').unlink(missing_ok=True) # shipped for the first time here
    before = files()
    study_files(tmp, 't_max=0,lr=5e-4', images=400_000, train_s=300.0, family='cars', method='deterministic baseline')
    card = run(mod, tmp, 't_max=0,lr=5e-4', name='cars-det', weights=False)
    assert files() == sorted(before + ['baselines/cars-det.json']) and not list(mod.DEST.rglob('*.safetensors'))
    assert (card['file'], card['bytes'], card['sha256'], card['weights']) == (None, None, None, mod.NOT_SHIPPED)
    assert all(json.loads(p.read_text())['weights'] == mod.NOT_SHIPPED for p in (mod.DEST / 'baselines').glob('*.json'))
    assert card['family'] == 'cars' and card['method'] == 'deterministic baseline' and card['images_seen'] == 400_000
    assert card['gpu_seconds'] == 300 and card['phases'][0]['settings']['t_max'] == 0
    assert [r['method'] for r in card['metrics']] == ['deterministic baseline']
    assert card['model'] == json.loads((mod.DEST / 'clevr1.json').read_text())['model'] # the `small` preset, as study.py trains it
    md = (mod.DEST / 'README.md').read_text()
    assert md.index('## Deterministic baselines (numbers only)') < md.index('### `cars-det`') and '## `clevr1`' in md
    monkeypatch.setenv('RENDERDIFFUSION_WEIGHTS', str(mod.DEST))
    from renderdiffusion_nb.model import pretrained_models, recorded_baselines
    assert recorded_baselines()['cars-det'] == card and 'cars-det' not in pretrained_models()
    with pytest.raises(SystemExit, match="no arm 'lr=5e-4'"): run(mod, tmp, 'lr=5e-4', name='cars-det', weights=False)
    study_files(tmp, 'lr=5e-4', family='cars', method='deterministic baseline')
    with pytest.raises(SystemExit, match='does not set t_max=0'): run(mod, tmp, 'lr=5e-4', name='cars-det', weights=False)
    with pytest.raises(SystemExit, match='--weights is required for cars'): run(mod, tmp, 'lr=5e-4', name='cars', weights=False)


def test_readme_is_what_the_cards_give(ship):
    "The committed weights/README.md is readme() of the committed cards: the shipped models, then the baselines (numbers only)."
    mod, _ = ship
    md = (mod.DEST / 'README.md').read_text()
    assert md == mod.readme(*mod.read_cards()), 'weights/README.md is stale: python tools/ship_models.py --readme'
    assert md.index('## `chairs`') < md.index('## Deterministic baselines (numbers only)') < md.index('### `chairs-det`')


def test_a_stopped_shared_run_records_how_and_the_floor_comes_from_its_evaluation(ship):
    mod, tmp = ship
    study_files(tmp, 't_power=2,lr=5e-4', images=100_096, train_s=437.0, family='cars')
    rows = json.loads((tmp / 'eval.json').read_text()) + [dict(family='cars', method='mean training image', input_psnr=12.95, novel_psnr=12.94)]
    (tmp / 'eval.json').write_text(json.dumps(rows))
    old, sys.argv = sys.argv, ['ship_models.py', '--study', str(tmp / 'study.json'), '--arm', 't_power=2,lr=5e-4', '--name', 'cars',
                               '--weights', str(tmp / 'w.safetensors'), '--eval', str(tmp / 'eval.json'), '--device', 'GPU X',
                               '--date', '2026-12-02', '--concurrent', 'five runs shared the GPU', '--note', 'stopped at half its schedule']
    try: mod.main()
    finally: sys.argv = old
    card = json.loads(mod.card_path('cars').read_text())
    assert card['concurrent'] == 'phase 1: five runs shared the GPU' and card['phases'][0]['note'] == 'stopped at half its schedule'
    assert [r['method'] for r in card['metrics']] == ['RenderDiffusion', 'mean training image']
    assert 'stopped at half its schedule' in (mod.DEST / 'README.md').read_text()


def test_a_run_stopped_before_its_schedule_records_the_schedule_and_what_it_trained(ship):
    mod, tmp = ship
    study_files(tmp, 't_power=2,lr=5e-4', images=200_064, train_s=437.0, family='cars') # planned: 1,563 steps of 128
    study = json.loads((tmp / 'study.json').read_text())
    study['arms'][0]['curve'] = [dict(step=782, images=100_096, loss=0.07, train_s=437.0, input_psnr=19.6, novel_psnr=16.3)]
    (tmp / 'study.json').write_text(json.dumps(study))
    card = run(mod, tmp, 't_power=2,lr=5e-4', name='cars')
    p = card['phases'][0]
    assert (p['settings']['steps'], p['settings']['warmup'], p['steps'], p['images']) == (1563, 156, 782, 100_096)
    assert p['note'] == "stopped at step 782 of its schedule's 1563" and card['images_seen'] == card['data']['train_scenes'] == 100_096
    assert p['images_per_s'] == round(100_096 / 437.0, 1)
