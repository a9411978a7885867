"""Build the docs site into _docs/ from the notebooks in nbs/.

With Quarto on PATH this is `nbdev_docs`. Without it (Quarto cannot always be installed) the same
nbdev processing runs, then the offline builder `smalldocs` renders the processed notebooks with the
same `_quarto.yml`. The site must work offline, so maths is converted to MathML at build time
(`latex2mathml`) instead of loading KaTeX from a CDN. nbdev names pages after the notebook without its number (core.html) and links
API names there; smalldocs keeps the notebook's name (00_core.html), so each such page also gets a
small redirect page under nbdev's name, keeping those links working.
"""
import html
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


UP_LINK = re.compile(r'href="([^"/:#?]+\.html)(#[^"]*)?"')


def root_links(page: Path, docs: Path):
    "Point a subfolder page's links to root pages (nbdev writes API links relative to the site root) one level up per folder."
    depth = len(page.relative_to(docs).parts) - 1
    if not depth: return
    def fix(m):
        if (page.parent / m.group(1)).exists() or not (docs / m.group(1)).exists(): return m.group(0)
        return f'href="{"../" * depth}{m.group(1)}{m.group(2) or ""}"'
    text = page.read_text(encoding='utf-8')
    new = UP_LINK.sub(fix, text)
    if new != text: page.write_text(new, encoding='utf-8')


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
    shutil.rmtree(docs, ignore_errors=True)
    subprocess.run([str(Path(sys.executable).parent / 'smalldocs'), 'render', '--quiet', '.'], cwd=proc, check=True)
    shutil.move(str(proc / '_docs'), str(docs))
    for page in docs.rglob('*.html'): offline_maths(page)
    for nb in sorted((root / 'nbs').rglob('[0-9]*.ipynb')):
        rel = nb.relative_to(root / 'nbs').with_suffix('.html')
        alias = rel.with_name(re.sub(r'^\d+[a-zA-Z0-9]*_', '', rel.name))
        if alias != rel and (docs / rel).exists() and not (docs / alias).exists():
            (docs / alias).write_text(REDIRECT.format(title=alias.stem, target=rel.name))
    for page in docs.rglob('*.html'): root_links(page, docs)
    print(f"docs site built in {docs.relative_to(root)}/")


if __name__ == '__main__':
    main()
