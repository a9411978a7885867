"""Fixtures shared by the browser tests (the docs site and JupyterLab), the skip of Triton tests where Triton is absent, and
Triton's CPU interpreter where there is no GPU."""
import importlib.util
import os
import re
import shutil

import pytest
import torch

# Triton reads TRITON_INTERPRET when it decorates a kernel, its own library functions included (at its first import):
# on a machine without a GPU the kernels run in its interpreter only if this is set before any test imports triton.
if not torch.cuda.is_available(): os.environ.setdefault('TRITON_INTERPRET', '1')

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')


@pytest.fixture(scope='module')
def browser():
    "Headless system Chromium driven by Playwright (no browser download)."
    if CHROMIUM is None: pytest.fail("Chromium is not installed: run `make browser` (installs the distribution's package)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox', '--disable-gpu', '--disable-background-networking',
                                                               '--disable-component-update', '--disable-sync', '--no-first-run'])
        yield b
        b.close()


# Triton comes with the dev extra (and with PyPI's CUDA builds of torch), not with the library: where it is
# absent, a test module that imports it is reported as skipped, with the reason, instead of failing to import.
HAS_TRITON = importlib.util.find_spec('triton') is not None
IMPORTS_TRITON = re.compile(r'^\s*(?:from|import)\s+(?:triton|renderdiffusion_nb\.render_triton)\b', re.M)


class NeedsTriton(pytest.Module):
    def collect(self):
        pytest.skip(f"{self.path.name} needs triton, which is not installed (pip install -e '.[dev]' brings it)")


def pytest_pycollect_makemodule(module_path, parent):
    if not HAS_TRITON and IMPORTS_TRITON.search(module_path.read_text(encoding='utf-8')):
        return NeedsTriton.from_parent(parent, path=module_path)
