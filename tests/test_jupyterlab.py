"""The quick-start tutorial run for real in JupyterLab, driven by headless Chromium.

A JupyterLab server is started on a free port with a random token, on a temporary copy of
nbs/tutorials/ (its saved execution counts cleared, so a count means this run set it) and with its
own (empty) configuration, settings and workspace folders. The browser
opens quickstart.ipynb, runs every cell from the Run menu and waits until every code cell has an
execution count and the kernel is idle. Then:

- no cell has an error output, and no cell wrote an error to stderr. Warnings and progress bars on
  stderr are allowed (a library may warn), but stderr text that holds a traceback or an
  `...Error:` / `...Exception:` line fails the test, as does any output of type 'error';
- the kernel is the Python that runs this test (the virtual environment's), not some other one
  (read from the kernel process's command line, on systems with /proc);
- the orbit viewer (ipywidgets) rendered: its sliders are visible and its image has loaded; moving the
  azimuth slider from the keyboard re-renders the scene, so the image changes.

Screenshots after opening, after running and after moving the slider go to artifacts/jupyterlab/.
The server is stopped however the test ends.
"""
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS, SHOTS = ROOT / 'nbs' / 'tutorials', ROOT / 'artifacts' / 'jupyterlab'
NOTEBOOK = 'quickstart.ipynb'
START_TIMEOUT, RUN_TIMEOUT, WIDGET_TIMEOUT = 90, 240, 60
STDERR_ERROR = re.compile(r'Traceback \(most recent call last\)|^\s*\w*(Error|Exception)\b.*:', re.MULTILINE)

# The state of the open notebook, read from JupyterLab's own models (not the DOM, which JupyterLab may
# window): execution count, outputs and the kernel's status.
NOTEBOOK_STATE = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext) return null;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return {counts: cells.map(c => c.model.executionCount), outputs: cells.map(c => c.model.outputs.toJSON()),
          status: kernel ? kernel.status : null, kernel: kernel ? kernel.name : null};
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def server_log(path: Path, n: int = 40) -> str:
    return '\n'.join(path.read_text(errors='replace').splitlines()[-n:]) if path.exists() else '(no log)'


def children(pid: int) -> list:
    "Command lines of the processes whose parent is `pid` (Linux /proc)."
    out = []
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            if int(stat.read_text().rsplit(')', 1)[1].split()[1]) == pid:
                out.append((stat.parent / 'cmdline').read_bytes().decode(errors='replace').split('\0'))
        except (OSError, IndexError, ValueError): continue
    return out


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A running JupyterLab on a copy of the tutorials: (base URL, token, server process, log path)."
    tmp = tmp_path_factory.mktemp('jupyterlab')
    notebooks = tmp / 'tutorials'
    shutil.copytree(TUTORIALS, notebooks, ignore=shutil.ignore_patterns('.*'))
    nb = json.loads((notebooks / NOTEBOOK).read_text())
    for cell in nb['cells']:
        if cell['cell_type'] == 'code': cell['execution_count'] = None
    (notebooks / NOTEBOOK).write_text(json.dumps(nb))
    settings = tmp / 'settings' / '@jupyterlab' / 'apputils-extension'
    settings.mkdir(parents=True)
    (settings / 'notification.jupyterlab-settings').write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp / 'config'), JUPYTER_RUNTIME_DIR=str(tmp / 'runtime'),
               JUPYTERLAB_SETTINGS_DIR=str(tmp / 'settings'), JUPYTERLAB_WORKSPACES_DIR=str(tmp / 'workspaces'),
               IPYTHONDIR=str(tmp / 'ipython'), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    port, token = free_port(), secrets.token_hex(16)
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', f'--port={port}', '--ServerApp.ip=127.0.0.1',
           f'--ServerApp.token={token}', f'--ServerApp.root_dir={notebooks}', '--ServerApp.port_retries=0',
           '--LabApp.expose_app_in_browser=True']
    if hasattr(os, 'geteuid') and os.geteuid() == 0: cmd.append('--allow-root')
    log = tmp / 'server.log'
    with open(log, 'w') as f: proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=notebooks)
    base = f'http://127.0.0.1:{port}/'
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None: pytest.fail(f"JupyterLab exited with code {proc.returncode} while starting:\n{server_log(log)}")
            try:
                with urllib.request.urlopen(f'{base}api/status?token={token}', timeout=5) as r:
                    if r.status == 200: break
            except (urllib.error.URLError, OSError): pass
            if time.monotonic() > deadline: pytest.fail(f"JupyterLab did not answer within {START_TIMEOUT} s:\n{server_log(log)}")
            time.sleep(0.5)
        yield base, token, proc, log
    finally:
        proc.terminate()
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill(); proc.wait(timeout=10)


def shot(page, name: str):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f'{name}.png'))


def stderr_errors(outputs: list) -> list:
    "Texts of error outputs, and of stderr streams that hold a traceback or an error line."
    bad = []
    for i, cell in enumerate(outputs):
        for o in cell:
            if o.get('output_type') == 'error': bad.append(f"cell {i}: {o.get('ename')}: {o.get('evalue')}")
            elif o.get('output_type') == 'stream' and o.get('name') == 'stderr':
                text = ''.join(o.get('text', ''))
                if STDERR_ERROR.search(text): bad.append(f"cell {i} wrote an error to stderr: {text[-500:]}")
    return bad


def test_quickstart_runs_in_jupyterlab(lab, browser):
    base, token, proc, log = lab
    page = browser.new_page(viewport={'width': 1280, 'height': 1000})
    console = []
    page.on('pageerror', lambda e: console.append(str(e)))
    page.goto(f'{base}lab/tree/{NOTEBOOK}?token={token}', wait_until='load')
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget && window.jupyterapp.shell.currentWidget.content "
                           "&& window.jupyterapp.shell.currentWidget.content.widgets.length > 0", timeout=START_TIMEOUT * 1000)
    # A notebook without a kernel in its metadata asks for one: accept the default (Python 3), as a reader would.
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        dialog = page.locator('.jp-Dialog')
        if dialog.count() and dialog.locator('.jp-mod-accept').count():
            dialog.locator('.jp-mod-accept').first.click()
        state = page.evaluate(NOTEBOOK_STATE)
        if state and state['status'] == 'idle': break
        if time.monotonic() > deadline: pytest.fail(f"the kernel did not start within {START_TIMEOUT} s (state {state and state['status']}):\n{server_log(log)}")
        time.sleep(0.5)
    shot(page, '1_opened')

    if Path('/proc/self/stat').exists(): # the kernel's command line, where the system shows it
        kernels = [c for c in children(proc.pid) if any('ipykernel' in a for a in c)]
        assert kernels, f"no kernel process under the server (pid {proc.pid})"
        assert kernels[0][0] == sys.executable, f"the kernel runs {kernels[0][0]}, not this environment's Python {sys.executable}"

    page.locator('.lm-MenuBar-itemLabel', has_text=re.compile(r'^Run$')).click()
    page.locator('.lm-Menu-itemLabel', has_text=re.compile(r'^Run All Cells$')).click()
    done = ("(() => { const s = (" + NOTEBOOK_STATE + ")(); if (!s || s.status !== 'idle') return false;"
            " const err = s.outputs.some(o => o.some(x => x.output_type === 'error'));"
            " return err || s.counts.every(c => c !== null); })")
    page.wait_for_function(done, timeout=RUN_TIMEOUT * 1000, polling=500)
    state = page.evaluate(NOTEBOOK_STATE)
    bad = stderr_errors(state['outputs'])
    assert not bad, "cells failed:\n" + '\n'.join(bad)
    assert all(c is not None for c in state['counts']), f"cells left unexecuted: execution counts {state['counts']}"
    assert page.locator('.jp-OutputArea-output [data-mime-type="application/vnd.jupyter.error"]').count() == 0

    slider = page.locator('.widget-slider', has_text='azimuth').first
    slider.scroll_into_view_if_needed()
    assert slider.is_visible(), "the viewer's azimuth slider is not visible"
    image = page.locator('img.widget-image').first
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle(), timeout=WIDGET_TIMEOUT * 1000)
    shot(page, '2_ran')

    before = image.get_attribute('src')
    handle = slider.locator('.noUi-handle').first
    handle.focus()
    page.keyboard.press('ArrowRight')
    page.wait_for_function("([img, src]) => img.src !== src && img.complete && img.naturalWidth > 0",
                           arg=[image.element_handle(), before], timeout=WIDGET_TIMEOUT * 1000)
    shot(page, '3_slider_moved')
    assert not console, f"errors in the page: {console}"
    page.close()
