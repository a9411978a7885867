"Package metadata, read from `settings.ini` (the one place dependencies are declared)."
import re
from configparser import ConfigParser
from pathlib import Path

import setuptools

here = Path(__file__).parent
cfg = ConfigParser(delimiters=['='])
cfg.read(here / 'settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']
for key in 'version description keywords author author_email license min_python lib_name user git_url branch'.split():
    if key not in cfg: raise ValueError(f"settings.ini is missing the key {key!r}")

spdx = {'apache2': 'Apache-2.0'} # nbdev's license names -> SPDX expressions; any other value is taken as one
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
py_versions = ['3.10', '3.11', '3.12', '3.13']
lib, min_python = cfg['lib_name'], cfg['min_python']


def absolute_links(md:str) -> str:
    "README links relative to the repository as absolute ones (the package index shows the README without the repository's files)."
    base = cfg['git_url'].rstrip('/')
    def fix(m):
        bang, text, target = m.groups()
        if re.match(r'[a-z][a-z0-9+.-]*:|#|/', target): return m.group(0)
        return f"{bang}[{text}]({base}/{'raw' if bang else 'blob'}/{cfg['branch']}/{target})"
    return re.sub(r'(!?)\[([^\]]*)\]\(([^)\s]+)\)', fix, md)


setuptools.setup(
    name=lib,
    version=cfg['version'],
    license_expression=spdx.get(cfg['license'].lower(), cfg['license']),
    license_files=['LICENSE'],
    classifiers=['Development Status :: ' + statuses[int(cfg['status']) - 1],
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'Natural Language :: ' + cfg['language'].title()]
                + ['Programming Language :: Python :: ' + v for v in py_versions[py_versions.index(min_python):]],
    url=cfg['git_url'],
    packages=[lib, f'{lib}.weights'],
    package_data={f'{lib}.weights': ['*.json', '*.safetensors', 'README.md', 'baselines/*.json']}, # baselines: cards without weights
    install_requires=cfg.get('requirements', '').split(),
    extras_require={'dev': cfg.get('dev_requirements', '').split()},
    python_requires='>=' + min_python,
    long_description=absolute_links((here / 'README.md').read_text(encoding='utf-8')),
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={'console_scripts': cfg.get('console_scripts', '').split(), 'nbdev': [f"{lib}={lib}._modidx:d"]},
    author=cfg['author'],
    author_email=cfg['author_email'],
    description=cfg['description'],
    keywords=cfg['keywords'],
)
