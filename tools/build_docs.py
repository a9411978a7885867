"""Build the docs site into _docs/ from the notebooks in nbs/.

With Quarto on PATH this is `nbdev_docs`. Without it (Quarto cannot always be installed) the same
nbdev processing runs, then the offline builder `smalldocs` renders the processed notebooks with the
same `_quarto.yml`. Between the two, the processed notebooks are adapted to smalldocs:

- nbdev links an API name to its page under nbdev's name (`core.html#show_images`); smalldocs names a
  page after its notebook (`00_core.html`), so each such link is pointed at the notebook, which
  smalldocs resolves and checks. Private helpers have no entry on their page: their names stay code.
- nbdev's `output-file` (the page name smalldocs does not use) is dropped from each page's front matter.
- A rendered signature is a code block, so the Markdown of its parameter comments (backticks, links)
  is turned into plain text there.

smalldocs runs with `--strict`: any warning, a broken link among them, fails the build. After it, every
link to an anchor on the site must find that anchor, or the build fails. The site must work offline,
so maths is converted to MathML at build time (`latex2mathml`) instead of loading KaTeX from a CDN.
Each numbered page also gets a small redirect page under nbdev's name (core.html), so addresses of
that form keep working.
"""
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

PROC_RE = r'\.(?:ipynb|qmd|md)$'
REDIRECT = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title>
<meta http-equiv="refresh" content="0; url={target}">
<script>location.replace("{target}" + location.hash)</script></head>
<body><a href="{target}">{title}</a></body></html>
"""


def nbdev_name(rel: Path) -> Path:
    "The page name nbdev gives a notebook: its name without the number (00_core.ipynb -> core.html)."
    return rel.with_name(re.sub(r'^\d+[a-zA-Z0-9]*_', '', rel.name)).with_suffix('.html')


# ---- the processed notebooks, before smalldocs ----

API_LINK = re.compile(r'\[([^\]]*)\]\(((?:\.\./)*)([\w.-]+)\.html#([^)\s]*)\)')
FENCE = re.compile(r'```python\n(.*?)```', re.S)
MD_LINK = re.compile(r'\[`?([^\]`]+)`?\]\([^)\s]*\)')
ENTRY = re.compile(r'(?m)^#{2,4} ([\w.]+)\s*$') # the heading of a rendered signature: its anchor


def api_links(text: str, page: Path, pages: dict, entries: dict) -> str:
    "Point nbdev's `name.html#anchor` links at the notebook of that page; a private helper's name stays plain code."
    def fix(m):
        label, _, name, anchor = m.groups()
        if anchor.startswith('_'): return label # no documentation entry: a private helper
        target = pages.get(name)
        if target is None: return m.group(0) # not an API page: smalldocs checks it as written
        owner = anchor.split('.')[0] # a method without an entry of its own links to its class's
        if anchor not in entries[target] and '.' in anchor and owner in entries[target]: anchor = owner
        return f'[{label}]({Path(os.path.relpath(target, page.parent)).as_posix()}#{anchor})'
    return API_LINK.sub(fix, text)


def plain_signatures(text: str) -> str:
    "In the code blocks of rendered signatures, parameter comments as plain text: no link syntax, no backticks."
    return FENCE.sub(lambda m: '```python\n' + MD_LINK.sub(r'\1', m.group(1)).replace('`', '') + '```', text)


def adapt(proc: Path):
    "Adapt every processed notebook to smalldocs (see the module docstring)."
    nbs = {nb.relative_to(proc): json.loads(nb.read_text(encoding='utf-8')) for nb in sorted(proc.rglob('*.ipynb'))}
    pages = {nbdev_name(rel).stem: rel for rel in nbs}
    entries = {rel: {h.lower() for c in data['cells'] for o in c.get('outputs', [])
                     for h in ENTRY.findall(''.join(o.get('data', {}).get('text/markdown', '')))} for rel, data in nbs.items()}
    for page, data in nbs.items():
        for cell in data['cells']:
            src = ''.join(cell['source'])
            if cell['cell_type'] == 'raw' and src.startswith('---'): src = re.sub(r'(?m)^output-file: .*\n', '', src)
            elif cell['cell_type'] == 'markdown': src = api_links(src, page, pages, entries)
            cell['source'] = src.splitlines(True)
            for out in cell.get('outputs', []):
                md = out.get('data', {}).get('text/markdown')
                if md is not None: out['data']['text/markdown'] = api_links(plain_signatures(''.join(md)), page, pages, entries).splitlines(True)
        (proc / page).write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding='utf-8')


# ---- the built pages ----

MATH = re.compile(r'<span class="math (inline|display)">\\[(\[](.*?)\\[)\]]</span>', re.S)
CDN = re.compile(r'<(?:link|script)[^>]*cdn\.jsdelivr\.net/npm/katex[^>]*>(?:</script>)?')


def mathml(match):
    "One `<span class=\"math ...\">` of TeX as MathML."
    from latex2mathml.converter import convert
    return convert(html.unescape(match.group(2)), display='block' if match.group(1) == 'display' else 'inline')


def offline_maths(page: Path):
    "Replace the TeX spans of a built page by MathML and drop the KaTeX links."
    text = page.read_text(encoding='utf-8')
    new = CDN.sub('', MATH.sub(mathml, text))
    if new != text: page.write_text(new, encoding='utf-8')


HREF = re.compile(r'<a\s[^>]*?href="([^"]*)"')
IDS = re.compile(r'\sid="([^"]+)"')


def missing_anchors(docs: Path) -> list:
    "Links within the site to a page or an anchor that does not exist, as 'page: href'."
    ids, bad = {}, []
    def anchors(p):
        if p not in ids: ids[p] = set(IDS.findall(p.read_text(encoding='utf-8')))
        return ids[p]
    for page in sorted(docs.rglob('*.html')):
        for href in HREF.findall(page.read_text(encoding='utf-8')):
            if re.match(r'[a-z]+:', href) or href in ('', '#') or href.startswith('/') or '#' not in href and not href.endswith('.html'): continue
            path, _, anchor = html.unescape(href).partition('#')
            target = (page.parent / path).resolve() if path else page
            if target.is_dir(): target = target / 'index.html'
            if not target.is_file() or (anchor and anchor not in anchors(target)): bad.append(f"{page.relative_to(docs)}: {href}")
    return bad


def main():
    root = Path(__file__).resolve().parents[1]
    if shutil.which('quarto'):
        subprocess.run(['nbdev_docs'], cwd=root, check=True)
        return
    from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar
    from nbdev.serve import proc_nbs
    proc, docs = root / '_proc', root / '_docs'
    shutil.rmtree(proc, ignore_errors=True)
    refresh_quarto_yml()
    nbdev_sidebar.__wrapped__(file_re=PROC_RE)
    proc_nbs(force=True)
    adapt(proc)
    shutil.rmtree(docs, ignore_errors=True)
    done = subprocess.run([str(Path(sys.executable).parent / 'smalldocs'), 'render', '--quiet', '--strict', '.'], cwd=proc)
    if done.returncode: sys.exit(f"smalldocs stopped on the warnings above (exit {done.returncode}): the docs site is not built")
    shutil.move(str(proc / '_docs'), str(docs))
    for page in docs.rglob('*.html'): offline_maths(page)
    for nb in sorted((root / 'nbs').rglob('[0-9]*.ipynb')):
        rel = nb.relative_to(root / 'nbs').with_suffix('.html')
        alias = nbdev_name(rel)
        if alias != rel and (docs / rel).exists() and not (docs / alias).exists():
            (docs / alias).write_text(REDIRECT.format(title=alias.stem, target=rel.name))
    bad = missing_anchors(docs)
    if bad: sys.exit("links on the docs site to a page or anchor that does not exist:\n  " + '\n  '.join(bad))
    print(f"docs site built in {docs.relative_to(root)}/")


if __name__ == '__main__':
    main()
