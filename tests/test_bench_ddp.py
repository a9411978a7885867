"The DDP benchmark's checks, run small on CPU (gloo): ranks agree, the loss curve matches one process, a killed job resumes exactly."
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_ddp_on_cpu(tmp_path):
    out = tmp_path / 'ddp.json'
    r = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'bench_ddp.py'), '--device', 'cpu', '--backend', 'torch', '--preset', 'tiny',
                        '--gpus', '1,2', '--steps', '12', '--log-every', '1', '--scaling-steps', '6', '--batch-size', '4', '--scenes', '64',
                        '--work', str(tmp_path / 'work'), '--json', str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    checks = res['rank_checks'] + res['resume']['rank_checks_after_resume']
    resumed_from = int(res['resume']['checkpoints_at_kill'][-1][5:12])
    assert 6 <= resumed_from < 12 and [c['step'] for c in checks] == [1, 12, resumed_from + 1, 12] and all(c['identical'] for c in checks), checks
    assert res['curve']['logged_steps'] == list(range(1, 13))
    assert res['curve']['max_abs_logged_diff'] < 1e-4, res['curve']  # the CPU renderer has no atomics: only the batch split differs
    z = res['resume']
    assert z['processes_killed'] >= 3 and z['killed_after_logged_step'] < 12, z
    assert z['logged_steps_match'] and z['max_abs_logged_diff'] == 0 and z['final_param_diff'][0] == 0, z
    assert [s['gpus'] for s in res['scaling']] == [1, 2] and all(s['images_per_s'] > 0 for s in res['scaling'])
    assert '| 2 | 4 | 8 |' in r.stdout
