"""The built docs site (`make docs` -> _docs/) opened in headless Chromium, page by page.

Per page: it loads with no console errors, it has a title and an H1, every image has loaded, every
internal link resolves, and every function and class a module exports has its rendered signature on its page.
One screenshot per page is saved under artifacts/docs/ for a person to look at.
"""
import functools
import http.server
import importlib
import inspect
import re
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS, NBS, SHOTS = ROOT / '_docs', ROOT / 'nbs', ROOT / 'artifacts' / 'docs'


def page_of(nb: Path) -> Path:
    return DOCS / nb.relative_to(NBS).with_suffix('.html')


def notebooks():
    return sorted(p for p in NBS.rglob('*.ipynb') if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts))


def exported_names():
    "Map page -> names exported by the module the page's notebook writes."
    out = {}
    for mod in sorted((ROOT / 'renderdiffusion_nb').glob('[!_]*.py')):
        m = re.search(r'File to edit: \.\./nbs/(\S+\.ipynb)', mod.read_text())
        if not m: continue
        module = importlib.import_module(f'renderdiffusion_nb.{mod.stem}')
        names = [n for n in getattr(module, '__all__', []) if inspect.isfunction(getattr(module, n)) or inspect.isclass(getattr(module, n))]
        out[page_of(NBS / m.group(1))] = names
    return out


@pytest.fixture(scope='module')
def site():
    if not (DOCS / 'index.html').exists(): pytest.fail("no docs site in _docs/: run `make docs` first")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    handler = functools.partial(Quiet, directory=str(DOCS))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{server.server_address[1]}/'
    server.shutdown()


def test_every_notebook_has_a_page():
    missing = [str(nb.relative_to(NBS)) for nb in notebooks() if not page_of(nb).exists()]
    assert not missing, f"notebooks without a docs page: {missing}"


@pytest.mark.parametrize('nb', notebooks(), ids=lambda p: p.stem)
def test_page_in_browser(nb, site, browser):
    path = page_of(nb)
    url = urljoin(site, path.relative_to(DOCS).as_posix())
    page = browser.new_page(viewport={'width': 1280, 'height': 900})
    errors = []
    page.on('console', lambda m: errors.append(m.text) if m.type == 'error' else None)
    page.on('pageerror', lambda e: errors.append(str(e)))
    resp = page.goto(url, wait_until='load')
    assert resp is not None and resp.ok, f"{url} did not load: {resp and resp.status}"
    page.wait_for_load_state('networkidle')
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f'{nb.stem}.png'))
    assert not errors, f"console errors on {path.name}: {errors}"
    assert page.title().strip(), f"{path.name} has no title"
    assert page.locator('h1').count() >= 1, f"{path.name} has no H1"
    broken = page.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    assert not broken, f"images that did not load on {path.name}: {broken}"
    for name in exported_names().get(path, []):
        sig = page.locator(f'[id="{name.lower()}"], [id="{name}"]')
        assert sig.count() >= 1, f"{path.name} has no rendered signature for the exported name {name}"
    hrefs = page.evaluate("[...document.querySelectorAll('a[href]')].map(a => a.href)")
    bad = []
    for href in hrefs:
        u = urlparse(href)
        if not href.startswith(site) or u.scheme not in ('http', 'https'): continue
        target = DOCS / unquote(u.path[len(urlparse(site).path):])
        if target.is_dir(): target = target / 'index.html'
        if not target.exists(): bad.append(href)
    assert not bad, f"internal links on {path.name} that do not resolve: {sorted(set(bad))}"
    page.close()
