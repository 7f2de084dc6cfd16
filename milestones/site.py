"""The docs site: `make docs` -> `tito docs build` -> `build_site()`.

Every notebook in nbs/ runs once, in its own process, under execnb with nbdev_test's skip rules
(IN_TEST=1, `tst_flags`, `eval: false`), after nbdev's `add_show_docs` has added API docs for the
exported names; results are cached under .tito/docs_cache/. With the Quarto program on PATH the
executed notebooks, a sidebar.yml made from milestones/milestones.json and the Progress page go to
`nbdev_docs`. Without it, nbdev's display processors, nbconvert's HTMLExporter (math as MathML from
latex2mathml, so nothing is fetched from the network) and Jinja2 templates under
milestones/templates/ write static pages that open straight from disk.
"""
from __future__ import annotations

import configparser, contextlib, hashlib, html, inspect, json, os, re, shutil, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ['build_site', 'SiteResult', 'page_name', 'write_sidebar_yml']
TEMPLATES = Path(__file__).with_name('templates')
CACHE_DIR = Path('.tito') / 'docs_cache'
META = 'tinytorch_docs'   # notebook metadata key holding the run's result


def _settings(root: Path) -> dict:
    cfg = configparser.ConfigParser(delimiters=['='], interpolation=None)
    with contextlib.suppress(OSError, configparser.Error): cfg.read(Path(root) / 'settings.ini', encoding='utf-8')
    return dict(cfg['DEFAULT'])


def _course(root: Path) -> dict:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((Path(root) / 'milestones' / 'milestones.json').read_text(encoding='utf-8'))
    return dict(modules=[], milestones=[])


def page_name(nb_name: str) -> str:
    "The page nbdev makes of a notebook: '02_tensor.ipynb' -> 'tensor.html'."
    return re.sub(r'^\d+[a-zA-Z0-9]*_', '', Path(nb_name).stem.lower()) + '.html'


# ------------------------------------------------------------------ running the notebooks

def _run_notebook(src: Path, dest: Path, flags: set[str]) -> None:
    "In a child process: run `src` as nbdev_test would and write it, with its outputs, to `dest`."
    os.environ['IN_TEST'] = '1'
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from nbdev.process import NBProcessor
    from nbdev.processors import populate_language, add_show_docs
    nb = NBProcessor(src, procs=[populate_language, add_show_docs], rm_directives=False, process=True).nb
    shell, error, start = CaptureShell(src), None, time.time()
    shell.run('from nbdev.showdoc import show_doc')

    def skip(cell):   # nbdev_test's rules
        d = cell.get('directives_') or {}
        return (cell.cell_type != 'code' or 'nbdev_export(' in cell.source
                or d.get('eval:', [''])[0].lower() == 'false' or bool(flags & d.keys()))

    def show_figures(cell):   # like Jupyter's inline backend, even after the notebook chose Agg
        plt, exc = sys.modules.get('matplotlib.pyplot'), shell.exc
        if plt is None or not plt.get_fignums(): return
        shown = any(o.get('output_type') == 'execute_result' and 'image/png' in o.get('data', {}) for o in cell.get('outputs', []))
        outs = shell.run(f'import matplotlib.pyplot as _p\nfor _n in {[] if shown else "_p.get_fignums()"}: display(_p.figure(_n))\n_p.close("all")')
        cell.outputs = list(cell.get('outputs', [])) + [o for o in outs if o['output_type'] != 'error']
        shell.exc = exc
    os.chdir(src.parent)
    try: shell.run_all(nb, exc_stop=True, preproc=skip, postproc=show_figures)
    except Exception as e:   # numbered as in the notebook, without the show_doc cells added above
        error = dict(cell=sum(not c.get('has_sd') for c in nb.cells[:shell._cell_idx]), error=f'{type(e).__name__}: {e}'[:500])
    for c in nb.cells: c.pop('has_sd', None)
    nb.metadata[META] = dict(ok=error is None, error=error, seconds=round(time.time() - start, 1))
    write_nb(nb, dest.with_suffix('.tmp'))
    os.replace(dest.with_suffix('.tmp'), dest)


def _run_all(root: Path, notebooks: list[Path], jobs: int, timeout: float, use_cache: bool, log) -> dict:
    "{notebook: (executed notebook file, run summary)}, each notebook run at most once, cached by content."
    s = _settings(root)
    lib = sorted((root / s.get('lib_path', 'tinytorch')).rglob('*.py'))
    runner = inspect.getsource(_run_notebook) + s.get('tst_flags', '') + sys.version   # a rendering change reruns nothing
    common = b''.join(p.read_bytes() for p in lib) + runner.encode()
    cache = root / CACHE_DIR
    cache.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, IN_TEST='1', PYTHONPATH=os.pathsep.join([str(root), str(Path(__file__).parent.parent)]))
    if jobs > 1: env.update(OPENBLAS_NUM_THREADS='1', OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')

    def one(nb: Path):
        out = cache / f'{nb.stem}.{hashlib.sha256(nb.read_bytes() + common).hexdigest()[:16]}.ipynb'
        with contextlib.suppress(OSError, ValueError):
            if use_cache and json.loads(out.read_text(encoding='utf-8'))['metadata'][META]['ok']: return nb, out, 'cached'
        for old in cache.glob(f'{nb.stem}.*.ipynb'): old.unlink()
        cmd = [sys.executable, '-m', 'milestones.site', '--run', str(nb), str(out), s.get('tst_flags', 'notest')]
        try: p = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired: return nb, None, f'did not finish within {timeout:g} s'
        return nb, (out if out.exists() else None), (p.stderr.strip().splitlines() or [f'exit code {p.returncode}'])[-1]

    results = {}
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for nb, out, how in pool.map(one, sorted(notebooks, key=lambda nb: -nb.stat().st_size)):   # longest first
            meta = json.loads(out.read_text(encoding='utf-8'))['metadata'][META] if out else dict(ok=False, error=dict(error=how))
            err = meta['error'] and f"cell {meta['error'].get('cell', '?')}: {meta['error']['error']}"
            log(f"  {nb.name:<26} {'ok' if meta['ok'] else 'FAILED (' + err + ')'}, "
                f"{how if how == 'cached' else str(meta.get('seconds', '?')) + ' s'}")
            results[nb] = (out, meta)
    return results


# ------------------------------------------------------------------ pages

def _mathml(tex: str, display: str) -> str:
    from latex2mathml.converter import convert
    try: return convert(tex, display=display)
    except Exception: return f'<code class="tex">{html.escape(tex)}</code>'   # shown as code, never as raw delimiters


def _exporter(link):
    "nbconvert's HTMLExporter with our template, math as MathML and notebook links made page links."
    from jinja2 import pass_context
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
    from traitlets.config import Config

    class Renderer(IPythonRenderer):
        def block_math(self, body): return _mathml(body, 'block')
        def inline_math(self, body): return _mathml(body, 'inline')
        def latex_environment(self, name, body): return _mathml(f'\\begin{{{name}}}{body}\\end{{{name}}}', 'block')
        def heading(self, text, level, **attrs):   # ids as Quarto (pandoc) makes them, so page#anchor links agree
            slug = re.sub(r'[^\w\-. ]', '', re.sub(r'<[^>]+>', '', text)).strip().lower().replace(' ', '-')
            return f'<h{level} id="{slug}">{text}<a class="anchor-link" href="#{slug}">#</a></h{level}>\n'
        def link(self, text, url, title=None):
            url = link(url)
            return super().link(text, url, title) if url else f'<span class="missing-page">{text}</span>'

    class Exporter(HTMLExporter):
        @pass_context
        def markdown2html(self, context, source):
            return MarkdownWithMath(renderer=Renderer(escape=False)).render(source)
    cfg = Config(TagRemovePreprocessor=dict(enabled=True, remove_input_tags={'remove_input'}, remove_cell_tags={'remove_cell'}))
    exporter = Exporter(config=cfg, template_name='tinytorch', extra_template_basedirs=[str(TEMPLATES)],
                        exclude_input_prompt=True, exclude_output_prompt=True)
    exporter.markdown = lambda source: exporter.markdown2html({}, source)   # for progress.md
    return exporter


def _notebook_html(nb_file: Path, exporter, git_url: str) -> tuple[str, str]:
    "(title, HTML body) of an executed notebook, shown as nbdev's docs show it."
    from execnb.nbio import nb2str, read_nb
    from nbdev.process import NBProcessor
    from nbdev.processors import (populate_language, hide_, hide_line, filter_stream_, rm_header_dash, rm_export,
                                  strip_ansi, clean_magics)
    import nbformat

    def tidy(cell):   # Quarto's cell options, for the renderer that has no Quarto
        d, tags = cell.get('directives_') or {}, cell.metadata.setdefault('tags', [])
        if d.get('include:', [''])[0] == 'false': tags.append('remove_cell')
        if d.get('echo:', [''])[0] == 'false' or re.search(r'^show_doc\(', cell.source, re.M): tags.append('remove_input')
        if d.get('output:', [''])[0] == 'false': cell.outputs = []
        for o in cell.get('outputs', []):   # show_doc's "[source](url){target=...}" link: Quarto syntax
            if 'text/markdown' in o.get('data', {}):
                md = ''.join(o.data['text/markdown'])
                o.data['text/markdown'] = re.sub(r'\[source\]\(\S+?(/blob/\S+?)\)\{[^}]*\}', lambda m: '' if not git_url else
                                                 f'<a class="source-link" href="{git_url.rstrip("/")}{m.group(1)}">source</a>', md)
    nb = read_nb(nb_file)
    nb.cells = [c for c in nb.cells if c.cell_type != 'code' or c.get('outputs') or not re.match(r'\s*show_doc\(', c.source)]
    NBProcessor(nb=nb, procs=[populate_language, hide_, hide_line, filter_stream_, rm_header_dash, rm_export, strip_ansi,
                             clean_magics, tidy], process=True)
    title = next((m.group(1).strip() for c in nb.cells if c.cell_type == 'markdown'
                  for m in [re.search(r'^#\s+(.+)$', c.source, re.M)] if m), page_name(nb_file.name)[:-5])
    node = nbformat.reads(nb2str(nb), as_version=4)
    return title, exporter.from_notebook_node(node)[0]


def write_sidebar_yml(root: Path, notebooks: list[Path]) -> Path:
    "nbs/sidebar.yml for Quarto, grouped by milestone like the built-in sidebar."
    course, have = _course(root), {nb.name for nb in notebooks}
    lines = ['website:', '  sidebar:', '    contents:', '      - index.ipynb']
    for ms in course['milestones']:
        mods = [m['notebook'] for k in ms['modules'] for m in course['modules'] if m['key'] == k and m['notebook'] in have]
        if mods: lines += [f'      - section: {json.dumps(ms.get("emoji", "") + " " + ms["name"], ensure_ascii=False)}', '        contents:',
                           *[f'          - {nb}' for nb in mods]]
    lines += ['      - progress.md', '']
    path = root / _settings(root).get('nbs_path', 'nbs') / 'sidebar.yml'
    path.write_text('\n'.join(lines), encoding='utf-8')
    return path


# ------------------------------------------------------------------ the build

@dataclass
class SiteResult:
    out_dir: Path
    renderer: str
    pages: list = field(default_factory=list)
    failures: list = field(default_factory=list)   # (notebook or step, message)
    warnings: list = field(default_factory=list)
    seconds: float = 0.0
    ok = property(lambda self: not self.failures)
    exit_code = property(lambda self: 0 if self.ok else 1)

    def __str__(self) -> str:
        s = f'{len(self.pages)} pages in {self.out_dir} ({self.renderer}, {self.seconds:.1f} s); open {self.out_dir / "index.html"}'
        if self.failures: s += f'\nWARNING: {len(self.failures)} failed: ' + '; '.join(f'{n}: {m}' for n, m in self.failures)
        return s + ''.join(f'\nwarning: {w}' for w in self.warnings)


def _progress(root: Path, out: Path, writer, result: SiteResult) -> str | None:
    "Write progress.md and timeline.svg into `out`; the markdown, or None (with a warning) when it cannot."
    try:
        if writer is None: from milestones.progress import write_progress as writer
        return Path(writer(out, root=root)[0]).read_text(encoding='utf-8')
    except Exception as e:   # the rest of the site is still worth having
        result.warnings.append(f'no Progress page: {type(e).__name__}: {e}')


def _build_builtin(root, out, notebooks, runs, result, progress_md) -> None:
    import jinja2
    from pygments.formatters import HtmlFormatter
    s, course = _settings(root), _course(root)
    files = {nb.name: page_name(nb.name) for nb in notebooks}

    def link(url: str) -> str:   # a link to a notebook goes to its page; to a notebook not written yet, nowhere
        path, hash_, anchor = url.partition('#')
        if '://' in path or not path.endswith('.ipynb'): return url
        return files[Path(path).name] + hash_ + anchor if Path(path).name in files else ''
    exporter, git_url = _exporter(link), s.get('git_url', '').strip()
    mods = {m['key']: dict(m, file=files.get(m['notebook']), number=i + 1) for i, m in enumerate(course['modules'])}
    groups = [dict(ms, modules=[mods[k] for k in ms['modules']]) for ms in course['milestones']]
    grouped = {m['notebook'] for g in groups for m in g['modules']}
    others = [dict(notebook=nb.name, file=files[nb.name], name=nb.stem) for nb in notebooks
              if nb.name not in grouped and nb.name != 'index.ipynb']
    pages = []   # (file, title, body, failure)
    for nb in notebooks:
        executed, meta = runs[nb]
        title, body = _notebook_html(executed or nb, exporter, git_url)
        pages.append((files[nb.name], title, body, None if meta['ok'] else meta['error']))
    if 'index.html' not in files.values():
        pages.insert(0, ('index.html', s.get('title', 'Home'), f'<h1>{s.get("title", "Home")}</h1>', None))
    if progress_md is not None: pages.append(('progress.html', 'Progress', exporter.markdown(progress_md), None))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    for old in out.glob('*.html'): old.unlink()   # pages of renamed or deleted notebooks
    for i, (file, title, body, failure) in enumerate(pages):
        page = env.get_template('page.html.j2').render(
            site_title=s.get('title', 'Docs'), title=title, body=body, failure=failure, current=file, groups=groups,
            others=others, has_progress=progress_md is not None, prev=pages[i - 1] if i else None,
            next=pages[i + 1] if i + 1 < len(pages) else None)
        (out / file).write_text(page, encoding='utf-8')
        result.pages.append(out / file)
    (out / 'site.css').write_text((TEMPLATES / 'site.css').read_text() + HtmlFormatter().get_style_defs('.highlight'))


def _nbdev_docs_command() -> list[str]:
    exe = Path(sys.executable).with_name('nbdev_docs')
    return [str(exe) if exe.exists() else 'nbdev_docs']


def _build_quarto(root, out, notebooks, runs, result, progress_md) -> None:
    "nbdev_docs on a copy of nbs/ whose notebooks carry their outputs, with our sidebar and Progress page."
    s = _settings(root)
    nbs, readme = root / s.get('nbs_path', 'nbs'), root / 'README.md'
    write_sidebar_yml(root, notebooks)
    # _quarto.yml and nbdev.yml, which nbdev_docs reads from the folder it is given
    p = subprocess.run([sys.executable, '-c', 'from nbdev.quarto import refresh_quarto_yml as f; f()'], cwd=root)
    if p.returncode: return result.failures.append(('nbdev refresh_quarto_yml', f'exit code {p.returncode}'))
    saved = readme.read_bytes() if readme.exists() else None   # nbdev_docs rewrites README.md
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / 'nbs'
        shutil.copytree(nbs, staged)
        for nb in notebooks:
            if runs[nb][0]: shutil.copyfile(runs[nb][0], staged / nb.name)
        for f in out.glob('timeline.svg'): shutil.copy(f, staged)
        if progress_md is not None: (staged / 'progress.md').write_text(progress_md, encoding='utf-8')
        try: p = subprocess.run(_nbdev_docs_command() + ['--path', str(staged)], cwd=root)
        finally:
            if saved is not None and readme.read_bytes() != saved: readme.write_bytes(saved)
    if p.returncode: result.failures.append(('nbdev_docs', f'exit code {p.returncode}'))
    doc_path = root / s.get('doc_path', '_docs')
    if doc_path.resolve() != out.resolve() and doc_path.is_dir(): shutil.copytree(doc_path, out, dirs_exist_ok=True)
    result.pages = sorted(out.glob('*.html'))


def build_site(project_root=None, out_dir=None, *, root=None, use_quarto: bool | None = None, jobs: int | None = None,
               timeout: float = 900, use_cache: bool = True, progress_writer=None, log=print) -> SiteResult:
    """Build the docs of the project at `root` (default: the current folder) into `out_dir` (default: doc_path).
    Quarto is used when `quarto` is on PATH, unless `use_quarto` says otherwise."""
    start, root = time.time(), Path(project_root or root or '.').resolve()
    s = _settings(root)
    out = Path(out_dir).resolve() if out_dir else root / s.get('doc_path', '_docs')
    use_quarto = bool(shutil.which('quarto')) if use_quarto is None else use_quarto
    result = SiteResult(out, 'quarto (nbdev_docs)' if use_quarto else 'built-in (nbconvert)')
    notebooks = sorted((p for p in (root / s.get('nbs_path', 'nbs')).glob('*.ipynb') if not p.name.startswith(('_', '.'))),
                       key=lambda p: (p.name != 'index.ipynb', p.name))
    log(f'Running {len(notebooks)} notebooks for the docs ({result.renderer})...')
    runs = _run_all(root, notebooks, jobs or min(2, os.cpu_count() or 1), timeout, use_cache, log)
    result.failures += [(nb.name, m['error']['error']) for nb, (_, m) in runs.items() if not m['ok']]
    out.mkdir(parents=True, exist_ok=True)
    progress_md = _progress(root, out, progress_writer, result)
    (_build_quarto if use_quarto else _build_builtin)(root, out, notebooks, runs, result, progress_md)
    result.seconds = time.time() - start
    return result


if __name__ == '__main__' and sys.argv[1:2] == ['--run']:   # the child process of _run_all
    _run_notebook(Path(sys.argv[2]).resolve(), Path(sys.argv[3]).resolve(), set(sys.argv[4].replace('|', ' ').split()))
