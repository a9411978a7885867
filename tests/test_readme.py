"""README.md works where it is read: on the repository's front page (links relative to the repository
root), on the package index (absolute links, written by setup.py), and as the docs site's home page,
nbs/index.ipynb (links relative to nbs/). `make readme` makes the README from that notebook and
points its page links into nbs/."""
import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
LINK = re.compile(r'(!?)\[([^\]]*)\]\(([^)\s]+)\)|(?:src|href)="([^"]+)"')
EXTERNAL = re.compile(r'[a-z][a-z0-9+.-]*:', re.I)


def links(md: str) -> list:
    "Every link and image target of a Markdown text (Markdown and HTML syntax), outside code blocks."
    md = re.sub(r'```.*?```', '', md, flags=re.S)
    return [m.group(3) or m.group(4) for m in LINK.finditer(md)]


def local(targets: list) -> list:
    "The targets that point to files next to the text: no scheme, no in-page anchor."
    return [unquote(t.split('#')[0]) for t in targets if not EXTERNAL.match(t) and not t.startswith('#')]


def index_markdown() -> str:
    return '\n'.join(''.join(c['source']) for c in json.loads((NBS / 'index.ipynb').read_text())['cells'] if c['cell_type'] == 'markdown')


def test_readme_links_resolve_in_the_repository():
    targets = local(links((ROOT / 'README.md').read_text(encoding='utf-8')))
    assert len(targets) > 10, f"expected the README's page links, found {targets}"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README.md links to files that do not exist (relative to the repository root): {missing}"


def test_index_links_resolve_beside_the_notebook():
    "The docs site and JupyterLab read nbs/index.ipynb where it is: its links are relative to nbs/."
    targets = local(links(index_markdown()))
    missing = [t for t in targets if not (NBS / t).exists()]
    assert not missing, f"nbs/index.ipynb links to files that do not exist beside it: {missing}"


def test_readme_is_the_index_with_links_into_nbs(tmp_path):
    "README.md is nbs/index.ipynb converted to Markdown, its page links prefixed with nbs/ (run `make readme` after editing the notebook)."
    subprocess.run([sys.executable, '-m', 'jupyter', 'nbconvert', '--log-level', 'WARN', '--to', 'markdown', str(NBS / 'index.ipynb'),
                    '--output-dir', str(tmp_path), '--output', 'README'], check=True)
    readme = (ROOT / 'README.md').read_text(encoding='utf-8')
    page_links = re.findall(r'(?<!!)\[[^\]]*\]\((nbs/[^)]*)\)', readme)
    assert page_links and all(not EXTERNAL.match(t) for t in page_links)
    assert re.sub(r'(?<!!)(\[[^\]]*\])\(nbs/', r'\1(', readme) == (tmp_path / 'README.md').read_text(encoding='utf-8'), \
        "README.md is stale: run `make readme`"


def test_package_index_gets_absolute_links():
    "The package index shows the README without the repository: setup.py's long description links only to absolute addresses, each naming a file that exists."
    desc = subprocess.run([sys.executable, 'setup.py', '--long-description'], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    targets = links(desc)
    assert targets and not local(targets), f"relative links in the long description: {local(targets)}"
    repo = re.search(r'^git_url\s*=\s*(\S+)', (ROOT / 'settings.ini').read_text(), re.M).group(1).rstrip('/')
    files = [re.sub(rf'^{re.escape(repo)}/(?:blob|raw)/[^/]+/', '', t) for t in targets if t.startswith(repo + '/')]
    assert files, "no links into the repository"
    missing = [f for f in files if not (ROOT / unquote(f.split('#')[0])).exists()]
    assert not missing, f"long-description links to files that are not in the repository: {missing}"
