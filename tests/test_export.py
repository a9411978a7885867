"""The library is generated: check that what is committed is what the notebooks give (the README: tests/test_readme.py)."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / 'renderdiffusion_nb'


def test_modules_match_notebooks(tmp_path):
    "Exporting every notebook afresh reproduces each module byte for byte, and no module lacks a notebook."
    from nbdev.export import nb_export
    from nbdev.config import get_config
    shutil.copytree(ROOT / 'nbs', tmp_path / 'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints'))
    out = tmp_path / LIB.name
    for nb in sorted((tmp_path / 'nbs').rglob('*.ipynb')):
        if not any(s.startswith(('_', '.')) for s in nb.relative_to(tmp_path).parts): nb_export(nb, lib_path=out)
    fresh = {p.relative_to(out) for p in out.rglob('*.py')}
    have = {p.relative_to(LIB) for p in LIB.rglob('*.py')} - {Path('__init__.py'), Path('_modidx.py')}
    assert have == fresh, f"modules without a notebook: {sorted(map(str, have - fresh))}; not exported: {sorted(map(str, fresh - have))}"
    stale = [str(p) for p in sorted(fresh) if (out / p).read_text() != (LIB / p).read_text()]
    assert not stale, f"modules that differ from their notebooks (run nbdev_export): {stale}"
    assert f"__version__ = \"{get_config().version}\"" in (LIB / '__init__.py').read_text()

