"""Multi-GPU training with DDP under torchrun: correctness checks and a scaling table.

Runs `renderdiffusion_nb.train` exactly as `rd-train` does, one `torchrun --standalone` job at a time, on a
procedural chairs data set:

1. **Same parameters on every rank.** In an N-GPU run, after the first step and after the last one, every rank's
   parameters are gathered and compared with rank 0's.
2. **Same loss curve as one GPU.** One run on 1 GPU and one on N GPUs with the same global batch, seed and steps.
   They differ only in how the batch is split (each rank draws its own ray jitter) and in the order of the
   gradient reduction, so their losses should agree within the step-to-step noise: compared per logged step and
   as means over windows of steps, next to the windows' standard errors.
3. **Kill and resume.** The N-GPU run again, killed with SIGKILL (every process of the job) part-way between two
   checkpoints, then resumed with the same command; its losses and final parameters are compared with the
   uninterrupted N-GPU run's.
4. **Scaling.** images/s at 1, 2, ... GPUs with a fixed batch per GPU (weak scaling) and the efficiency against
   linear, measured from the log's clock between logged steps after a warm-up (kernel compilation excluded).

NVLink multicast stays off (NCCL_NVLS_ENABLE=0 and friends are set for every job). Usage:

    python benchmarks/bench_ddp.py                           # all GPUs of this host, `small`, Triton renderer
    python benchmarks/bench_ddp.py --gpus 1,2 --steps 300 --json ddp.json
    python benchmarks/bench_ddp.py --device cpu --preset tiny --gpus 1,2 --steps 6 --scaling-steps 4 --batch-size 4  # gloo smoke test
"""
from __future__ import annotations
import argparse
import datetime
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

NO_MULTICAST = {'NCCL_NVLS_ENABLE': '0', 'TORCH_SYMM_MEM_DISABLE_MULTICAST': '1', 'NVSHMEM_DISABLE_NVLS': '1'}


# ---------------------------------------------------------------- one rank of a torchrun job
def worker(out, data, preset, device, backend, steps, batch, log_every, ckpt_every):
    "Train (or resume) one run; on the first and the last step, compare every rank's parameters with rank 0's."
    import torch.distributed as dist
    from renderdiffusion_nb.train import Trainer, run_config, train_config
    out = Path(out)
    if (out / 'config.json').exists(): cfg = run_config(out, steps=steps)
    else:
        kw = dict(device=device) if device == 'cpu' else {}
        cfg = train_config(preset, data=data, out=str(out), steps=steps, batch_size=batch, backend=backend, log_every=log_every,
                           ckpt_every=ckpt_every, grid_every=0, num_workers=2 if device == 'cpu' else 3, progress=False, **kw)
    tr = Trainer(cfg)
    first, checks, step = tr.step + 1, [], tr.train_step

    def checked_step(*a):
        m = step(*a)
        if tr.world > 1 and tr.step in (first, cfg.steps):
            flat = torch.cat([p.detach().float().flatten() for p in tr.model.parameters()])
            every = [torch.empty_like(flat) for _ in range(tr.world)]
            dist.all_gather(every, flat)
            checks.append({'step': tr.step, 'n_params': flat.numel(), 'identical': all(torch.equal(every[0], e) for e in every[1:]),
                           'max_abs_diff': max((every[0] - e).abs().max().item() for e in every[1:])})
        return m
    tr.train_step = checked_step
    tr.fit()
    if tr.rank == 0: (out / f'rank_checks_from_{first}.json').write_text(json.dumps(checks))


# ---------------------------------------------------------------- the driver
def launch(args, nproc, out, data, batch, steps, log_every, ckpt_every, background=False):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}', __file__, '--worker',
           str(out), str(data), args.preset, args.device, args.backend, str(steps), str(batch), str(log_every), str(ckpt_every)]
    env = {**os.environ, **NO_MULTICAST, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep)}
    if args.device == 'cpu': env['OMP_NUM_THREADS'] = '1'
    log = Path(out).parent / f'{Path(out).name}.out'
    with open(log, 'a') as fh: p = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True) # the job keeps its own copy
    if background: return p
    if p.wait(): raise RuntimeError(f"torchrun with {nproc} process(es) failed (exit {p.returncode}); see {log}:\n" + log.read_text()[-3000:])


def job_pids(pid):
    """`pid` and all its descendants. torchrun starts each worker in a session of its own, so killing torchrun's
    process group would leave the workers running: a crash of the whole job has to be made process by process."""
    parent = {}
    for d in Path('/proc').iterdir():
        if d.name.isdigit():
            try: parent[int(d.name)] = int((d / 'stat').read_text().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError): pass
    found, todo = [], [pid]
    while todo:
        p = todo.pop(); found.append(p); todo += [c for c, pp in parent.items() if pp == p]
    return found


def running(pid):
    "Whether `pid` exists and is not a zombie."
    try: return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError): return False


def read_log(out): return [json.loads(l) for l in (Path(out) / 'log.jsonl').read_text().splitlines() if l.strip()]


def final_params(out):
    from safetensors.torch import load_file
    ck = sorted((Path(out) / 'checkpoints').glob('step_*.safetensors'))[-1]
    return {k: v.float() for k, v in load_file(str(ck)).items() if k.startswith('model/')}


def param_diff(a, b):
    "Max abs difference and relative L2 difference of two parameter sets."
    mx = max((a[k] - b[k]).abs().max().item() for k in a)
    num = math.sqrt(sum((a[k] - b[k]).square().sum().item() for k in a)); den = math.sqrt(sum(a[k].square().sum().item() for k in a))
    return mx, num / den


def windows(recs, lo, hi):
    "Mean loss and its standard error over the logged steps in (lo, hi]."
    v = [r['loss'] for r in recs if lo < r['step'] <= hi]
    m = sum(v) / len(v)
    se = math.sqrt(sum((x - m) ** 2 for x in v) / max(len(v) - 1, 1) / len(v))
    return m, se


def rate(recs, skip):
    "images/s between the first logged step past `skip` and the last, from the log's wall clock."
    r = [x for x in recs if x['step'] > skip]
    if len(r) < 2: raise RuntimeError(f"too few logged steps past {skip} to time")
    return r, (r[-1]['step'] - r[0]['step']) / (r[-1]['time'] - r[0]['time'])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--gpus', default=None, help='comma-separated process counts for the scaling table (default: 1, 2, 4, ... up to all GPUs)')
    p.add_argument('--preset', default='small', help='training preset')
    p.add_argument('--backend', default='triton', choices=['torch', 'triton', 'auto'])
    p.add_argument('--device', default='cuda', choices=['cuda', 'cpu'], help="'cpu': gloo processes instead of GPUs (a smoke test)")
    p.add_argument('--batch-size', type=int, default=32, help='global batch of the loss-curve and resume runs; batch per GPU of the scaling runs')
    p.add_argument('--steps', type=int, default=300, help='steps of the loss-curve and resume runs')
    p.add_argument('--log-every', type=int, default=10)
    p.add_argument('--scaling-steps', type=int, default=150, help='steps of each scaling run (the first third untimed)')
    p.add_argument('--scaling-batches', default=None, help='comma-separated batches per GPU for the scaling table (default: --batch-size)')
    p.add_argument('--scenes', type=int, default=8192, help='training scenes to make')
    p.add_argument('--work', default=None, help='folder for data and runs (default: a temporary folder)')
    p.add_argument('--json', default=None, help='also write the results to this JSON file')
    a = p.parse_args(argv)
    from renderdiffusion_nb.data import make_dataset
    from renderdiffusion_nb.train import train_config

    avail = torch.cuda.device_count() if a.device == 'cuda' else (os.cpu_count() or 1)
    if a.device == 'cuda' and avail < 2: sys.exit(f"this benchmark needs at least 2 GPUs; this host has {avail}")
    counts = [int(x) for x in a.gpus.split(',')] if a.gpus else [n for n in (1, 2, 4, 8, 16) if n <= avail]
    if max(counts) > avail: sys.exit(f"--gpus asks for {max(counts)} processes; this host has {avail} {'GPUs' if a.device == 'cuda' else 'cores'}")
    N = max(counts)
    if N < 2: sys.exit("--gpus must include a count of 2 or more")
    if a.batch_size % N: sys.exit(f"--batch-size ({a.batch_size}) must be divisible by the largest process count ({N})")
    res = train_config(a.preset).model.image_size
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.work or tmp); work.mkdir(parents=True, exist_ok=True)
        data = make_dataset('chairs', 'train', a.scenes, res, work / 'data', device=a.device, progress=False)
        results = {'device': torch.cuda.get_device_name(0) if a.device == 'cuda' else (platform.processor() or 'CPU'),
                   'date': str(datetime.date.today()), 'torch': torch.__version__, 'preset': a.preset, 'backend': a.backend, 'N': N}

        def save():
            if a.json: Path(a.json).write_text(json.dumps(results, indent=1))

        # 1 + 2: loss curves, 1 process vs N, same global batch
        S, B, L = a.steps, a.batch_size, a.log_every
        ck = max(L, (S // 6) // L * L)
        t0 = time.time()
        launch(a, 1, work / 'curve1', data, B, S, L, ck)
        launch(a, N, work / f'curve{N}', data, B, S, L, ck)
        c1, cN = read_log(work / 'curve1'), read_log(work / f'curve{N}')
        steps_common = sorted({r['step'] for r in c1} & {r['step'] for r in cN})
        l1, lN = {r['step']: r['loss'] for r in c1}, {r['step']: r['loss'] for r in cN}
        edges = [0] + [round(S * i / 3) for i in (1, 2, 3)]
        win = [dict(steps=f'{lo + 1}-{hi}', one=windows(c1, lo, hi), many=windows(cN, lo, hi)) for lo, hi in zip(edges, edges[1:])]
        results['rank_checks'] = json.loads((work / f'curve{N}' / 'rank_checks_from_1.json').read_text())
        results['curve'] = dict(steps=S, batch=B, log_every=L, losses_1=[l1[s] for s in steps_common], losses_N=[lN[s] for s in steps_common],
                                logged_steps=steps_common, windows=win,
                                max_abs_logged_diff=max(abs(l1[s] - lN[s]) for s in steps_common),
                                final_param_diff=param_diff(final_params(work / 'curve1'), final_params(work / f'curve{N}')),
                                wall_s=round(time.time() - t0, 1))
        save()

        # 3: kill part-way between two checkpoints, resume with the same command
        kdir = work / f'kill{N}'
        target = 3 * ck  # killed after this checkpoint, before the next
        job = launch(a, N, kdir, data, B, S, L, ck, background=True)
        ckfile, deadline = kdir / 'checkpoints' / f'step_{target:07d}.safetensors', time.time() + 600
        while time.time() < deadline and job.poll() is None:
            if ckfile.exists() and (kdir / 'log.jsonl').exists() and read_log(kdir)[-1]['step'] >= target + L: break
            time.sleep(0.05)
        if job.poll() is not None: raise RuntimeError(f"the run to be killed ended first (exit {job.returncode})")
        logged_at_kill = read_log(kdir)[-1]['step']
        pids = job_pids(job.pid)
        for pid in pids:
            try: os.kill(pid, signal.SIGKILL)
            except ProcessLookupError: pass
        job.wait(); time.sleep(2)
        alive = [p for p in pids if running(p)]
        if alive: raise RuntimeError(f"processes {alive} of the killed job are still running")
        kept = sorted(x.name for x in (kdir / 'checkpoints').glob('step_*.safetensors'))
        launch(a, N, kdir, data, B, S, L, ck)
        kr = {r['step']: r['loss'] for r in read_log(kdir)}
        results['resume'] = dict(killed_after_logged_step=logged_at_kill, checkpoints_at_kill=kept, processes_killed=len(pids),
                                 rank_checks_after_resume=json.loads((kdir / f'rank_checks_from_{int(kept[-1][5:12]) + 1}.json').read_text()),
                                 logged_steps_match=sorted(kr) == sorted(lN),
                                 max_abs_logged_diff=max(abs(kr[s] - lN[s]) for s in lN if s in kr),
                                 final_param_diff=param_diff(final_params(work / f'curve{N}'), final_params(kdir)))
        save()

        # 4: weak scaling, fixed batch per process
        per = [int(x) for x in a.scaling_batches.split(',')] if a.scaling_batches else [B]
        T = a.scaling_steps; Ls = max(1, T // 12)
        results['scaling'] = []
        for b in per:
            base = None
            for n in counts:
                out = work / f'scale{n}x{b}'
                launch(a, n, out, data, b * n, T, Ls, 10 ** 9)
                recs, sps = rate(read_log(out), T // 3)
                ips = sps * b * n
                base = base or ips / n
                results['scaling'].append(dict(gpus=n, batch_per_gpu=b, global_batch=b * n, images_per_s=ips, ms_per_step=1e3 / sps,
                                               efficiency=ips / (n * base), timed_steps=recs[-1]['step'] - recs[0]['step']))
                print(json.dumps(results['scaling'][-1]), file=sys.stderr, flush=True)
                save()
        report(results)


def report(r):
    N, c, z = r['N'], r['curve'], r['resume']
    print(f"\nDDP under torchrun, {r['device']}, torch {r['torch']}, {r['date']}; `{r['preset']}`, {r['backend']} renderer, bf16 autocast on CUDA\n")
    print(f"Same parameters on every rank ({N} processes):\n")
    print('| after step | parameters | identical on every rank | max abs difference to rank 0 |\n| ---: | ---: | --- | ---: |')
    for x in r['rank_checks'] + z['rank_checks_after_resume']:
        print(f"| {x['step']} | {x['n_params']:,} | {'yes' if x['identical'] else 'no'} | {x['max_abs_diff']:.3g} |")
    print(f"\nLoss, 1 process vs {N}, global batch {c['batch']}, {c['steps']} steps (mean of the logged {c['log_every']}-step losses, +- standard error):\n")
    print(f"| steps | 1 process | {N} processes | difference |\n| --- | --- | --- | --- |")
    for w in c['windows']:
        (m1, s1), (mn, sn) = w['one'], w['many']
        print(f"| {w['steps']} | {m1:.4f} +- {s1:.4f} | {mn:.4f} +- {sn:.4f} | {mn - m1:+.4f} |")
    print(f"\nLargest difference of one logged loss: {c['max_abs_logged_diff']:.2e}; final parameters: max abs difference "
          f"{c['final_param_diff'][0]:.3g}, relative L2 {c['final_param_diff'][1]:.3g}.")
    print(f"\nKill and resume ({N} processes): SIGKILL to all {z['processes_killed']} processes of the job (torchrun, ranks, data loaders) "
          f"after logged step {z['killed_after_logged_step']} with checkpoints "
          f"{', '.join(z['checkpoints_at_kill'])}; resumed run logged the same steps: {'yes' if z['logged_steps_match'] else 'no'}; "
          f"largest loss difference to the uninterrupted run {z['max_abs_logged_diff']:.3g}; final parameters max abs difference "
          f"{z['final_param_diff'][0]:.3g}, relative L2 {z['final_param_diff'][1]:.3g}.")
    print('\nWeak scaling (fixed batch per GPU):\n')
    print('| GPUs | batch per GPU | global batch | images/s | ms/step | efficiency vs linear |\n| ---: | ---: | ---: | ---: | ---: | ---: |')
    for s in r['scaling']:
        print(f"| {s['gpus']} | {s['batch_per_gpu']} | {s['global_batch']} | {s['images_per_s']:.1f} | {s['ms_per_step']:.1f} | {100 * s['efficiency']:.0f}% |")


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == '--worker':
        out, data, preset, device, backend, steps, batch, log_every, ckpt_every = sys.argv[2:11]
        worker(out, data, preset, device, backend, int(steps), int(batch), int(log_every), int(ckpt_every))
    else: main()
