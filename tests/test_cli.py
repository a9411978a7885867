"""The console scripts as a user meets them: `--help` without importing torch, a user error as one line
on stderr with status 2 (a bug keeps its traceback), and the names of shipped models wherever a
checkpoint is asked for, and the names of recorded baselines (numbers, no weights) refused with advice."""
import configparser
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
cfg = configparser.ConfigParser(delimiters=['='])
cfg.read(ROOT / 'settings.ini')
SCRIPTS = dict(s.split('=') for s in cfg['DEFAULT']['console_scripts'].split())
SHIPPED = ['cars', 'chairs', 'clevr1', 'planes']
BASELINES = ['cars-det', 'chairs-det', 'clevr1-det', 'planes-det']


@pytest.fixture(scope='module')
def bin_dir(tmp_path_factory):
    "The console scripts as pip writes them (settings.ini's entry points), run by this interpreter."
    d = tmp_path_factory.mktemp('bin')
    for name, target in SCRIPTS.items():
        mod, fn = target.split(':')
        (d / name).write_text(f"import sys\nfrom {mod} import {fn}\nif __name__ == '__main__':\n    sys.exit({fn}())\n")
    return d


def run(bin_dir, cmd, *args, cwd=None, python=()):
    return subprocess.run([sys.executable, *python, str(bin_dir / cmd), *args], capture_output=True, text=True, cwd=cwd)


def one_line_error(r, cmd):
    "The command failed as a user error: status 2 and one line on stderr that names the command."
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'{cmd}: error: ') and 'Traceback' not in r.stderr, r.stderr
    return lines[0]


@pytest.mark.parametrize('cmd', sorted(SCRIPTS))
def test_help_imports_no_torch(bin_dir, cmd):
    r = run(bin_dir, cmd, '--help', python=('-X', 'importtime'))
    assert r.returncode == 0 and r.stdout.startswith(f'usage: {cmd}'), r.stdout + r.stderr
    imported = {line.rsplit('|', 1)[1].strip() for line in r.stderr.splitlines() if line.startswith('import time:') and '|' in line}
    assert 'fastcore.script' in imported, "no import timings on stderr"
    heavy = sorted({m.split('.')[0] for m in imported} & {'torch', 'numpy', 'matplotlib'} | {m for m in imported if m in ('renderdiffusion_nb.model', 'renderdiffusion_nb.core')})
    assert not heavy, f"{cmd} --help imported {heavy}"


def test_unknown_checkpoint_lists_the_shipped_models(bin_dir, tmp_path):
    line = one_line_error(run(bin_dir, 'rd-eval', 'chair', 'test', cwd=tmp_path), 'rd-eval')
    assert "no checkpoint file 'chair'" in line and ', '.join(SHIPPED) in line, line


def test_bad_flag_value_is_a_user_error(bin_dir, tmp_path):
    line = one_line_error(run(bin_dir, 'rd-eval', 'clevr1', 'test', '--t_r', '0;40', cwd=tmp_path), 'rd-eval')
    assert "'0;40'" in line, line


def test_missing_data_folder_is_a_user_error(bin_dir, tmp_path):
    line = one_line_error(run(bin_dir, 'rd-train', 'no-data', 'run', '--config', 'tiny', cwd=tmp_path), 'rd-train')
    assert 'no-data' in line and not (tmp_path / 'run').exists(), line


def test_demo_refuses_a_foreign_folder_in_one_line(bin_dir, tmp_path):
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'notes.txt').write_text('mine')
    line = one_line_error(run(bin_dir, 'rd-demo', '--out', 'mine', cwd=tmp_path), 'rd-demo')
    assert 'was not written by the demo' in line and (tmp_path / 'mine' / 'notes.txt').read_text() == 'mine'


def test_demo_names_the_shipped_models_when_a_family_has_none(bin_dir, tmp_path):
    line = one_line_error(run(bin_dir, 'rd-demo', '--families', 'cars,boats', cwd=tmp_path), 'rd-demo')
    assert "no shipped model for ['boats']" in line and 'planes' in line and not (tmp_path / 'outputs').exists(), line


def test_malformed_command_line_is_argparses(bin_dir):
    r = run(bin_dir, 'rd-eval')
    assert r.returncode == 2 and 'usage: rd-eval' in r.stderr and 'Traceback' not in r.stderr, r.stderr


def test_user_errors_only_for_checks(monkeypatch, capsys):
    "In the console script: a check of the package exits with one line; an error from inside torch or a failed operation propagates."
    import torch
    from renderdiffusion_nb.cli import is_user_error, user_errors
    from renderdiffusion_nb.train import train_config
    def rd_x(f): return f()
    cmd = user_errors(rd_x)
    monkeypatch.setattr(sys, 'argv', ['/somewhere/bin/rd-x'])
    with pytest.raises(SystemExit) as e: cmd(lambda: train_config('huge'))
    assert e.value.code == 2 and capsys.readouterr().err.startswith('rd-x: error: unknown training preset')
    with pytest.raises(ValueError): cmd(lambda: torch.nn.functional.interpolate(torch.zeros(1, 1, 4), size=2, scale_factor=2))
    with pytest.raises(KeyError): cmd(lambda: {}['key'])
    with pytest.raises(ValueError): cmd(lambda: int('x')) # a failed operation in code outside the package
    with pytest.raises(SystemExit): cmd(lambda: open('/no/such/file'))
    assert not is_user_error(ValueError('never raised'))
    monkeypatch.setattr(sys, 'argv', ['python'])
    with pytest.raises(ValueError, match='unknown training preset'): cmd(lambda: train_config('huge')) # called from Python: propagates


def test_resolve_checkpoint(tmp_path, monkeypatch):
    from renderdiffusion_nb.cli import resolve_checkpoint
    from renderdiffusion_nb.model import weights_dir
    assert resolve_checkpoint('chairs') == weights_dir() / 'chairs.safetensors'
    monkeypatch.chdir(tmp_path)
    Path('chairs').write_bytes(b'a file of mine')
    assert resolve_checkpoint('chairs') == Path('chairs') # a file that exists wins
    Path('runs').mkdir()
    with pytest.raises(FileNotFoundError, match="'runs' is a folder, not a checkpoint file"): resolve_checkpoint('runs')
    copy = tmp_path / 'weights'
    shutil.copytree(weights_dir(), copy)
    data = bytearray((copy / 'clevr1.safetensors').read_bytes()); data[-1] ^= 1
    (copy / 'clevr1.safetensors').write_bytes(bytes(data))
    monkeypatch.setenv('RENDERDIFFUSION_WEIGHTS', str(copy))
    with pytest.raises(ValueError, match='corrupt'): resolve_checkpoint('clevr1')
    with pytest.raises(FileNotFoundError, match='recorded baseline'): resolve_checkpoint('chairs-det') # the copy keeps baselines/


def test_recorded_baselines_are_refused_with_their_card(tmp_path, monkeypatch):
    "A recorded baseline's name: load_pretrained and resolve_checkpoint say where its numbers are and how to train one."
    from renderdiffusion_nb.cli import resolve_checkpoint
    from renderdiffusion_nb.model import load_pretrained, pretrained_models, recorded_baselines, weights_dir
    assert sorted(pretrained_models()) == SHIPPED and sorted(recorded_baselines()) == BASELINES
    assert all(c['file'] is None and c['sha256'] is None and c['metrics'] for c in recorded_baselines().values())
    d = tmp_path / 'weights'
    (d / 'baselines').mkdir(parents=True)
    card = dict(json.loads((weights_dir() / 'baselines' / 'clevr1-det.json').read_text()), name='toy-det')
    (d / 'baselines' / 'toy-det.json').write_text(json.dumps(card))
    shutil.copy(weights_dir() / 'clevr1.json', d)
    monkeypatch.setenv('RENDERDIFFUSION_WEIGHTS', str(d))
    assert recorded_baselines() == {'toy-det': card} and 'toy-det' not in pretrained_models()
    for f in (load_pretrained, resolve_checkpoint):
        with pytest.raises(FileNotFoundError) as e: f('toy-det')
        msg = str(e.value)
        assert "'toy-det' is a recorded baseline" in msg and str(d / 'baselines' / 'toy-det.json') in msg, msg
        assert 'not shipped' in msg and 'rd-train <data> <run folder> --t_max 0' in msg and 'shipped models: clevr1' in msg, msg


def test_baseline_name_on_the_command_line_is_a_user_error(bin_dir, tmp_path):
    line = one_line_error(run(bin_dir, 'rd-eval', 'clevr1', 'test', '--baseline', 'clevr1-det', cwd=tmp_path), 'rd-eval')
    assert "'clevr1-det' is a recorded baseline" in line and 'clevr1-det.json' in line and '--t_max 0' in line, line


def test_train_from_a_shipped_model(tmp_path, monkeypatch):
    "rd-train --init takes a shipped model's name: the run starts from its weights, which fit the preset's model."
    import inspect
    import renderdiffusion_nb.train as train_mod
    from renderdiffusion_nb.cli import rd_train
    from renderdiffusion_nb.model import load_checkpoint, weights_dir
    runs = []
    monkeypatch.setattr(train_mod, 'train', lambda cfg: runs.append(cfg) or 'no training here')
    inspect.unwrap(rd_train)(str(tmp_path / 'data'), str(tmp_path / 'run'), init='clevr1', steps=1)
    assert Path(runs[0].init) == weights_dir() / 'clevr1.safetensors'
    load_checkpoint(runs[0].init, config=runs[0].model)
