"""The built docs site (`make docs` -> _docs/) opened in headless Chromium, page by page.

Per page: it loads with no console errors, it has a title and an H1, every image has loaded, every
internal link resolves (to its page and, with a fragment, to that anchor on it), no table is wider than
the text column, and every function and class a module exports has its rendered signature on its page.
One screenshot per page is saved under artifacts/docs/ for a person to look at. The builder's own link
checks are tested on a small made-up site.
"""
import functools
import http.server
import importlib
import importlib.util
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


def build_docs():
    "tools/build_docs.py as a module."
    spec = importlib.util.spec_from_file_location('build_docs', ROOT / 'tools' / 'build_docs.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


REFRESH = re.compile(r'http-equiv="refresh" content="0; url=([^"]+)"')


@functools.lru_cache(maxsize=None)
def anchors(path: Path) -> frozenset:
    "The ids on a built page; a redirect page (nbdev's page names) stands for the page it redirects to."
    text = path.read_text(encoding='utf-8')
    m = REFRESH.search(text)
    if m: return anchors((path.parent / m.group(1)).resolve())
    return frozenset(re.findall(r'\sid="([^"]+)"', text))


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
    wide = page.evaluate("[...document.querySelectorAll('main .sd-table')].filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText.split('\\n')[0])")
    assert not wide, f"tables wider than the text column on {path.name} (screens that hide scrollbars clip them): {wide}"
    hrefs = page.evaluate("[...document.querySelectorAll('a[href]')].map(a => a.href)")
    bad = []
    for href in hrefs:
        u = urlparse(href)
        if not href.startswith(site) or u.scheme not in ('http', 'https'): continue
        target = DOCS / unquote(u.path[len(urlparse(site).path):])
        if target.is_dir(): target = target / 'index.html'
        if not target.exists() or (u.fragment and target.suffix == '.html' and unquote(u.fragment) not in anchors(target.resolve())): bad.append(href)
    assert not bad, f"internal links on {path.name} that do not resolve: {sorted(set(bad))}"
    page.close()


def test_builder_points_api_links_at_notebooks():
    bd = build_docs()
    pages = {'core': Path('00_core.ipynb'), 'data': Path('03b_datasets.ipynb')}
    entries = {Path('00_core.ipynb'): {'show_images'}, Path('03b_datasets.ipynb'): {'multiviewdataset'}}
    text = ('[`show_images`](core.html#show_images), [`_as_hwc`](core.html#_as_hwc), '
            '[`MultiViewDataset.from_scenes`](data.html#multiviewdataset.from_scenes), [x](other.html#y)')
    assert bd.api_links(text, Path('tutorials/quickstart.ipynb'), pages, entries) == (
        '[`show_images`](../00_core.ipynb#show_images), `_as_hwc`, '
        '[`MultiViewDataset.from_scenes`](../03b_datasets.ipynb#multiviewdataset), [x](other.html#y)')
    sig = '### f\n\n```python\ndef f(\n    x:int, # A [`Cameras`](cameras.html#cameras), not `None`\n)\n```\n\n*Doc with `code`.*'
    assert bd.plain_signatures(sig) == '### f\n\n```python\ndef f(\n    x:int, # A Cameras, not None\n)\n```\n\n*Doc with `code`.*'


def test_builder_finds_broken_links(tmp_path):
    (tmp_path / 'sub').mkdir()
    (tmp_path / 'a.html').write_text('<h2 id="there">x</h2><a href="b.html#gone">1</a> <a href="a.html#there">2</a> <a href="#there">3</a>'
                                     '<a href="missing.html">4</a> <a href="https://example.org/x.html#y">5</a>')
    (tmp_path / 'b.html').write_text('<p id="here">b</p><a href="sub/">6</a>')
    (tmp_path / 'sub' / 'index.html').write_text('<a href="../b.html#here">7</a> <a href="../a.html#nowhere">8</a>')
    assert build_docs().missing_anchors(tmp_path) == ['a.html: b.html#gone', 'a.html: missing.html', 'sub/index.html: ../a.html#nowhere']
