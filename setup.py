"""Installs `tinytorch` and the `tito` milestone CLI from the values in settings.ini."""
from configparser import ConfigParser
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    author=cfg['author'],
    license=cfg['license'],
    python_requires=f">={cfg['min_python']}",
    packages=setuptools.find_packages(include=['tinytorch', 'tinytorch.*', 'milestones', 'milestones.*']),
    package_data={'tinytorch': ['data/*'], 'milestones': ['*.json', 'templates/*', 'templates/*/*']},
    include_package_data=True,
    install_requires=cfg['requirements'].split(),
    extras_require={'dev': cfg['dev_requirements'].split(), 'serve': cfg.get('serve_requirements', '').split(),
                    'images': cfg.get('images_requirements', '').split()},
    entry_points={'console_scripts': cfg['console_scripts'].split(),
                  'nbdev': [f"{cfg['lib_name']}={cfg['lib_name']}._modidx:d"]},
)
