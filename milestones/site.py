"""The TinyTorch docs site: `make docs` -> `tito docs build` -> `build_site()`.

With the Quarto program on PATH this runs nbdev's own `nbdev_docs` (as on GitHub Pages).
Quarto cannot be installed from the package registries, so without it a built-in renderer
makes the site instead, from nothing but the notebooks and the Python standard library:

- every notebook in nbs/ is executed (execnb's CaptureShell, one subprocess per notebook,
  IN_TEST=1 like nbdev_test, results cached under .tito/docs_cache/ keyed by content hash);
- each becomes one static HTML page in _docs/: prose (a small markdown renderer below),
  code, outputs (text, HTML, show_doc markdown, PNG/SVG images inlined), failures shown in
  a red box; exported functions and classes get `show_doc` API docs as nbdev adds them;
- a sidebar groups the module pages by milestone (milestones/milestones.json);
- a Progress page embeds timeline.svg and the status tables from
  `milestones.progress.write_progress`.

Links are relative, so the pages open straight from disk (file://).
"""
from __future__ import annotations

import ast
import configparser
import contextlib
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ['build_site', 'SiteResult', 'render_markdown', 'page_name', 'execute_notebook']

SITE_META = 'tinytorch_site'      # key in executed notebooks' metadata / synthetic cells
CACHE_DIR = '.tito/docs_cache'
_ANSI = re.compile(r'\x1B(?:[@-Z\\-_]|\[[0-?]*[ -/]*[@-~])')


# =============================================================================== markdown
# A small CommonMark-ish renderer: ATX/setext headings, paragraphs, emphasis, inline code,
# links, images, autolinks, nested lists, fenced and indented code, GFM tables, blockquotes,
# rules, raw HTML blocks and $math$ (kept as text). Enough for notebook prose and show_doc.

_FENCE = re.compile(r'^( {0,3})(`{3,}|~{3,})\s*([^`]*)$')
_ATX = re.compile(r'^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$')
_HR = re.compile(r'^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$')
_LIST = re.compile(r'^( {0,3})([-*+]|\d{1,9}[.)])([ \t]+|$)(.*)$')
_QUOTE = re.compile(r'^ {0,3}> ?(.*)$')
_TABLE_SEP = re.compile(r'^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$')
_HTML_BLOCK = re.compile(r'^ {0,3}<(/?)(div|table|thead|tbody|tr|td|th|details|summary|p|pre|img|br|hr|h[1-6]|ul|ol|li|'
                         r'blockquote|section|figure|figcaption|center|iframe|svg|style|script|span|a|!--)\b', re.I)
_INLINE_TAG = re.compile(r'</?(a|b|i|u|s|em|strong|code|br|sup|sub|span|kbd|img|mark|small|del|ins|abbr)\b[^<>]*>', re.I)


class _Ctx:
    "Per-page rendering state: heading ids, link rewriting, local assets to copy."
    def __init__(self, link_map=None):
        self.link_map = link_map
        self.ids: dict[str, int] = {}
        self.headings: list[tuple[int, str, str]] = []   # (level, id, text)
        self.assets: set[str] = set()

    def slug(self, text: str) -> str:
        base = re.sub(r'[^\w\- ]', '', _strip_tags(text).lower()).strip().replace(' ', '-') or 'section'
        n = self.ids.get(base, 0)
        self.ids[base] = n + 1
        return base if n == 0 else f'{base}-{n}'

    def is_missing_notebook(self, url: str) -> bool:
        path = url.strip().partition('#')[0]
        return (self.link_map is not None and path.endswith('.ipynb') and '://' not in path
                and Path(path).name not in self.link_map)

    def url(self, url: str) -> str:
        url = url.strip()
        if re.match(r'^[a-z][a-z0-9+.-]*:|^#|^/', url, re.I): return url
        path, _, anchor = url.partition('#')
        name = Path(path).name
        if self.link_map and name in self.link_map: path = self.link_map[name]
        elif path and not path.endswith('.html'): self.assets.add(path)
        return path + (f'#{anchor}' if anchor else '')


def _strip_tags(s: str) -> str: return re.sub(r'<[^>]+>', '', s)


def _esc(s: str) -> str: return html.escape(s, quote=False)


def _attr(s: str) -> str: return html.escape(s, quote=True)


def render_inline(text: str, ctx: _Ctx | None = None) -> str:
    "Markdown inline syntax of `text` as HTML."
    ctx = ctx or _Ctx()
    stash: list[str] = []

    def keep(fragment: str) -> str:
        stash.append(fragment)
        return f'\x00{len(stash) - 1}\x00'

    text = re.sub(r'(`+)(.+?)(?<!`)\1(?!`)', lambda m: keep(f'<code>{_esc(m.group(2).strip())}</code>'), text, flags=re.S)
    text = re.sub(r'\$\$(.+?)\$\$', lambda m: keep(f'<span class="math">\\({_esc(m.group(1))}\\)</span>'), text, flags=re.S)
    text = re.sub(r'(?<![\w$\\])\$(?=\S)([^$]+?)(?<=\S)\$(?![\w$])',
                  lambda m: keep(f'<span class="math">\\({_esc(m.group(1))}\\)</span>'), text)
    text = re.sub(r'\\([\\`*_{}\[\]()#+\-.!|$<>~])', lambda m: keep(_esc(m.group(1))), text)
    text = re.sub(r'<(https?://[^>\s]+)>', lambda m: keep(f'<a href="{_attr(m.group(1))}">{_esc(m.group(1))}</a>'), text)
    text = _INLINE_TAG.sub(lambda m: keep(m.group(0)), text)

    def image(m):
        alt, src, title = m.group(1), m.group(2), m.group(3)
        t = f' title="{_attr(title)}"' if title else ''
        return keep(f'<img src="{_attr(ctx.url(src))}" alt="{_attr(alt)}"{t}>')
    text = re.sub(r'!\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+"([^"]*)")?\s*\)', image, text)

    def link(m):
        label, href, title = m.group(1), m.group(2), m.group(3)
        t = f' title="{_attr(title)}"' if title else ''
        for key, val in re.findall(r'([\w-]+)="([^"]*)"', m.group(4) or ''):   # Quarto {target="_blank" ...}
            if key in ('target', 'style', 'class'): t += f' {key}="{_attr(val)}"'
        if ctx.is_missing_notebook(href):                     # a module not written yet: no dead link
            return keep(f'<span class="missing-link" title="{_attr(href)} is not written yet">'
                        f'{render_inline(label, ctx)}</span>')
        return keep(f'<a href="{_attr(ctx.url(href))}"{t}>{render_inline(label, ctx)}</a>')
    text = re.sub(r'\[((?:[^\[\]]|\[[^\]]*\])+)\]\(\s*<?([^)\s>]+)>?(?:\s+"([^"]*)")?\s*\)(?:\{([^{}\n]*)\})?',
                  link, text)
    text = re.sub(r'(?<![="\'(\w])(https?://[^\s<>()\]]+[^\s<>()\].,;:!?\'"])',
                  lambda m: keep(f'<a href="{_attr(m.group(1))}">{_esc(m.group(1))}</a>'), text)

    text = _esc(text)
    text = re.sub(r'\*\*(?=\S)(.+?)(?<=\S)\*\*', r'<strong>\1</strong>', text, flags=re.S)
    text = re.sub(r'(?<![\w_])__(?=\S)(.+?)(?<=\S)__(?![\w_])', r'<strong>\1</strong>', text, flags=re.S)
    text = re.sub(r'(?<![*\w])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![*\w])', r'<em>\1</em>', text, flags=re.S)
    text = re.sub(r'(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])', r'<em>\1</em>', text, flags=re.S)
    text = re.sub(r'~~(?=\S)(.+?)(?<=\S)~~', r'<del>\1</del>', text, flags=re.S)
    text = re.sub(r'(?: {2,}|\\)\n', '<br>\n', text)
    while '\x00' in text:
        new = re.sub(r'\x00(\d+)\x00', lambda m: stash[int(m.group(1))], text)
        if new == text: break
        text = new
    return text


def _align(a: str) -> str: return f' style="text-align:{a}"' if a else ''


def _split_row(line: str) -> list[str]:
    line = line.strip()
    if line.startswith('|'): line = line[1:]
    if line.endswith('|') and not line.endswith('\\|'): line = line[:-1]
    cells = re.split(r'(?<!\\)\|', line)
    return [c.strip().replace('\\|', '|') for c in cells]


def _highlight(code: str, lang: str = 'python') -> str:
    "Syntax-highlighted HTML for `code` (Pygments when importable, else escaped text)."
    lang = (lang or '').strip().lower()
    if lang in ('', 'text', 'plain', 'output', 'none'): return _esc(code)
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import get_lexer_by_name
        from pygments.util import ClassNotFound
        try: lexer = get_lexer_by_name(lang)
        except ClassNotFound: return _esc(code)
        return highlight(code, lexer, HtmlFormatter(nowrap=True)).rstrip('\n')
    except ImportError:
        return _esc(code)


def _code_block(code: str, lang: str = '') -> str:
    cls = f' class="language-{_attr(lang)}"' if lang else ''
    return f'<pre class="code highlight"><code{cls}>{_highlight(code, lang)}</code></pre>'


def _starts_block(line: str) -> bool:
    return bool(_FENCE.match(line) or _ATX.match(line) or _HR.match(line) or _QUOTE.match(line)
                or _HTML_BLOCK.match(line) or line.strip().startswith('$$')
                or (_LIST.match(line) and _LIST.match(line).group(4).strip()))


def _render_blocks(lines: list[str], ctx: _Ctx) -> str:
    out: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if m := _FENCE.match(line):
            indent, fence, info = len(m.group(1)), m.group(2), m.group(3).strip()
            body, i = [], i + 1
            while i < n and not re.match(rf'^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$', lines[i]):
                body.append(lines[i][indent:] if lines[i][:indent].strip() == '' else lines[i])
                i += 1
            i += 1
            out.append(_code_block('\n'.join(body), info.split()[0] if info else ''))
            continue
        if line.strip().startswith('$$'):
            body, rest = [], line.strip()[2:]
            if rest.rstrip().endswith('$$') and rest.strip() != '':
                body.append(rest.rstrip()[:-2])
                i += 1
            else:
                body.append(rest)
                i += 1
                while i < n and '$$' not in lines[i]:
                    body.append(lines[i])
                    i += 1
                if i < n:
                    body.append(lines[i].split('$$')[0])
                    i += 1
            out.append(f'<div class="math">\\[{_esc(chr(10).join(body).strip())}\\]</div>')
            continue
        if m := _ATX.match(line):
            level, text = len(m.group(1)), (m.group(2) or '').strip()
            hid = ctx.slug(text)
            inner = render_inline(text, ctx)
            ctx.headings.append((level, hid, _strip_tags(inner)))
            out.append(f'<h{level} id="{hid}">{inner}</h{level}>')
            i += 1
            continue
        if _HR.match(line):
            out.append('<hr>')
            i += 1
            continue
        if '|' in line and i + 1 < n and _TABLE_SEP.match(lines[i + 1]) and '-' in lines[i + 1]:
            header, aligns = _split_row(line), []
            for spec in _split_row(lines[i + 1]):
                left, right = spec.startswith(':'), spec.endswith(':')
                aligns.append('center' if left and right else 'right' if right else 'left' if left else '')
            rows, i = [], i + 2
            while i < n and lines[i].strip() and '|' in lines[i]:
                rows.append(_split_row(lines[i]))
                i += 1

            def cells(row, tag):
                row = (row + [''] * len(header))[:len(header)]
                return ''.join(f'<{tag}{_align(a)}>{render_inline(c, ctx)}</{tag}>'
                               for c, a in zip(row, aligns + [''] * len(header)))
            body = ''.join(f'<tr>{cells(r, "td")}</tr>' for r in rows)
            out.append(f'<table><thead><tr>{cells(header, "th")}</tr></thead><tbody>{body}</tbody></table>')
            continue
        if _QUOTE.match(line):
            body = []
            while i < n and lines[i].strip():
                q = _QUOTE.match(lines[i])
                if q: body.append(q.group(1))
                elif _starts_block(lines[i]): break
                else: body.append(lines[i])           # lazy continuation
                i += 1
            out.append(f'<blockquote>{_render_blocks(body, ctx)}</blockquote>')
            continue
        if _LIST.match(line):
            html_list, i = _render_list(lines, i, ctx)
            out.append(html_list)
            continue
        if _HTML_BLOCK.match(line):
            body = []
            while i < n and lines[i].strip():
                body.append(lines[i])
                i += 1
            out.append('\n'.join(body))
            continue
        if line.startswith('    ') or line.startswith('\t'):
            body = []
            while i < n and (lines[i].startswith('    ') or not lines[i].strip()):
                body.append(lines[i][4:])
                i += 1
            while body and not body[-1].strip(): body.pop()
            out.append(_code_block('\n'.join(body)))
            continue
        para = [line]
        i += 1
        while i < n and lines[i].strip():
            setext = re.match(r'^ {0,3}(=+|-+)\s*$', lines[i])
            if not setext and (_starts_block(lines[i]) or ('|' in lines[i] and i + 1 < n
                                                           and _TABLE_SEP.match(lines[i + 1]) and '-' in lines[i + 1])):
                break
            if setext:                                        # setext heading
                level = 1 if lines[i].strip()[0] == '=' else 2
                text = ' '.join(p.strip() for p in para)
                hid = ctx.slug(text)
                inner = render_inline(text, ctx)
                ctx.headings.append((level, hid, _strip_tags(inner)))
                out.append(f'<h{level} id="{hid}">{inner}</h{level}>')
                para = []
                i += 1
                break
            para.append(lines[i])
            i += 1
        if para:
            out.append(f'<p>{render_inline(chr(10).join(p.strip() if k else p.lstrip() for k, p in enumerate(para)).rstrip(), ctx)}</p>')
    return '\n'.join(out)


def _render_list(lines: list[str], i: int, ctx: _Ctx) -> tuple[str, int]:
    first = _LIST.match(lines[i])
    ordered = first.group(2)[0].isdigit()
    start = int(re.match(r'\d+', first.group(2)).group()) if ordered else 1
    items, loose, n = [], False, len(lines)
    while i < n:
        m = _LIST.match(lines[i])
        if not m or m.group(2)[0].isdigit() != ordered: break
        content_col = len(m.group(1)) + len(m.group(2)) + max(1, min(len(m.group(3).expandtabs(4)), 4))
        body = [m.group(4)]
        i += 1
        while i < n:
            ln = lines[i]
            if not ln.strip():
                nxt = next((l for l in lines[i + 1:] if l.strip()), None)
                if nxt is not None and len(nxt) - len(nxt.lstrip()) >= content_col:
                    body.append('')
                    i += 1
                    continue
                if nxt is not None and _LIST.match(nxt) and _LIST.match(nxt).group(2)[0].isdigit() == ordered \
                        and len(_LIST.match(nxt).group(1)) < content_col:
                    loose = True
                break
            indent = len(ln) - len(ln.lstrip())
            if indent >= content_col:
                body.append(ln[content_col:])
            elif _LIST.match(ln) or _starts_block(ln):
                break
            else:
                body.append(ln.strip())          # lazy continuation of the paragraph
            i += 1
        items.append(body)
        while i < n and not lines[i].strip():
            nxt = next((l for l in lines[i:] if l.strip()), None)
            if nxt is not None and _LIST.match(nxt) and len(_LIST.match(nxt).group(1)) < 4 \
                    and _LIST.match(nxt).group(2)[0].isdigit() == ordered:
                loose = True
                i += 1
            else:
                break
    parts = []
    for body in items:
        inner = _render_blocks(body, ctx)
        if not loose and '' not in body:
            inner = re.sub(r'^<p>(.*?)</p>', r'\1', inner, count=1, flags=re.S)
        parts.append(f'<li>{inner}</li>')
    tag = 'ol' if ordered else 'ul'
    start_attr = f' start="{start}"' if ordered and start != 1 else ''
    return f'<{tag}{start_attr}>\n' + '\n'.join(parts) + f'\n</{tag}>', i


def render_markdown(text: str, link_map: dict | None = None, ctx: _Ctx | None = None) -> str:
    "HTML for markdown `text`; `link_map` rewrites links to notebooks (e.g. '02_tensor.ipynb') to their pages."
    ctx = ctx or _Ctx(link_map)
    lines = text.replace('\r\n', '\n').replace('\r', '\n').split('\n')
    return _render_blocks(lines, ctx)


# =============================================================================== notebooks

def _source(cell) -> str:
    s = cell.get('source', '')
    return ''.join(s) if isinstance(s, list) else s


def _text(v) -> str: return ''.join(v) if isinstance(v, list) else str(v)


def _directives(source: str) -> dict[str, str]:
    "nbdev `#| name value` directives at the top of a cell, as {name: value}."
    found = {}
    for line in source.splitlines():
        s = line.strip()
        if not s: continue
        m = re.match(r'^#\|\s*([\w-]+):?\s*(.*)$', s)
        if not m: break
        found[m.group(1).lower()] = m.group(2).strip()
    return found


def _strip_directives(source: str) -> str:
    lines = source.splitlines()
    while lines and (not lines[0].strip() or re.match(r'^\s*#\|', lines[0])): lines.pop(0)
    return '\n'.join(line for line in lines if not re.search(r'#\|\s*hide_line\s*$', line))


def _skip_flags(root: Path) -> set[str]:
    return set(filter(None, re.split(r'[|,\s]+', _settings(root).get('tst_flags', 'notest'))))


def _public_defs(source: str) -> list[str]:
    "Top-level public functions and classes a cell defines (not @patch-ed methods)."
    try: tree = ast.parse(source)
    except SyntaxError: return []
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith('_'):
            decos = {ast.unparse(d).split('(')[0].split('.')[-1] for d in node.decorator_list}
            if not decos & {'patch', 'patch_to', 'delegates_to', 'typedispatch', 'overload'}:
                names.append(node.name)
    return names


def _add_show_docs(nb: dict) -> None:
    "Like nbdev's docs build: after each exported cell, API docs for the public names it defines."
    shown = set()
    for c in nb['cells']:
        if c.get('cell_type') == 'code':
            shown |= set(re.findall(r'show_doc\(\s*([\w.]+)', _source(c)))
    cells = []
    for c in nb['cells']:
        cells.append(c)
        if c.get('cell_type') != 'code': continue
        d = _directives(_source(c))
        if not ({'export', 'exports'} & d.keys()): continue
        for name in _public_defs(_strip_directives(_source(c))):
            if name in shown: continue
            shown.add(name)
            cells.append(dict(cell_type='code', source=f'_tt_show_doc({name})', outputs=[], execution_count=None,
                              metadata={SITE_META: {'auto_showdoc': True}}))
    nb['cells'] = cells


def _run_notebook(src: Path, dest: Path, skip_flags: set[str]) -> None:
    "Child process: execute `src` cell by cell like nbdev_test, stop at the first error, write `dest`."
    os.environ['IN_TEST'] = '1'
    from execnb.shell import CaptureShell
    nb = json.loads(Path(src).read_text(encoding='utf-8'))
    _add_show_docs(nb)
    shell = CaptureShell(src)
    have_showdoc = True
    shell.run('from nbdev.showdoc import show_doc as _tt_show_doc')
    if shell.exc: have_showdoc, shell.exc = False, None
    start, error, skipped = time.time(), None, []
    os.chdir(Path(src).parent)
    for idx, cell in enumerate(nb['cells']):
        if cell.get('cell_type') != 'code': continue
        source = _source(cell)
        auto = cell.get('metadata', {}).get(SITE_META, {}).get('auto_showdoc')
        d = _directives(source)
        if (d.get('eval', '').lower() == 'false' or 'nbdev_export(' in source or skip_flags & d.keys()
                or (auto and not have_showdoc)):
            skipped.append(idx)
            continue
        shell._cell_idx = idx + 1
        outputs = shell.run(source)
        cell['outputs'] = [dict(o) for o in outputs]
        if shell.exc is not None:
            if auto:                              # our own API-doc cell: never fails the page
                cell['outputs'], shell.exc = [], None
                continue
            exc = shell.exc
            original = sum(1 for c in nb['cells'][:idx] if not c.get('metadata', {}).get(SITE_META))
            error = dict(cell=idx, notebook_cell=original, ename=type(exc).__name__, evalue=str(exc)[:2000])
            break
    nb.setdefault('metadata', {})[SITE_META] = dict(ok=error is None, error=error, skipped=skipped,
                                                    seconds=round(time.time() - start, 2))
    tmp = Path(dest).with_suffix('.tmp')
    tmp.write_text(json.dumps(nb, ensure_ascii=False), encoding='utf-8')
    os.replace(tmp, dest)


def execute_notebook(src: Path, dest: Path, root: Path, timeout: float = 300) -> dict:
    "Execute notebook `src` in a fresh Python process, writing it with outputs to `dest`; returns its run summary."
    pkg_parent = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, IN_TEST='1', PYTHONPATH=os.pathsep.join(
        [str(root), pkg_parent] + ([os.environ['PYTHONPATH']] if os.environ.get('PYTHONPATH') else [])))
    env.pop('MPLBACKEND', None)
    flags = ','.join(sorted(_skip_flags(root)))
    cmd = [sys.executable, '-m', 'milestones.site', '--execute', str(src), str(dest), '--skip-flags', flags]
    start = time.time()
    try:
        p = subprocess.run(cmd, cwd=str(Path(src).parent), env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(ok=False, error=dict(cell=None, ename='Timeout', evalue=f'did not finish within {timeout:g} s'),
                    seconds=round(time.time() - start, 2), executed=False)
    if p.returncode != 0 or not Path(dest).exists():
        tail = '\n'.join((p.stderr or p.stdout or '').strip().splitlines()[-15:])
        return dict(ok=False, error=dict(cell=None, ename='ExecutionError', evalue=tail or f'exit code {p.returncode}'),
                    seconds=round(time.time() - start, 2), executed=False)
    meta = json.loads(Path(dest).read_text(encoding='utf-8')).get('metadata', {}).get(SITE_META, {})
    return dict(meta, executed=True)


# =============================================================================== project

def _settings(root: Path) -> dict:
    cfg = configparser.ConfigParser(delimiters=['='], interpolation=None)
    with contextlib.suppress(OSError, configparser.Error):
        cfg.read(Path(root) / 'settings.ini', encoding='utf-8')
    return dict(cfg['DEFAULT']) if cfg.has_section('DEFAULT') or cfg.defaults() else {}


def page_name(nb_name: str) -> str:
    "The page a notebook becomes, as nbdev names it: '02_tensor.ipynb' -> 'tensor.html', 'index.ipynb' -> 'index.html'."
    stem = Path(nb_name).stem.lower()
    return re.sub(r'^\d+[a-zA-Z0-9]*_', '', stem) + '.html'


def _course(root: Path) -> dict:
    for path in (Path(root) / 'milestones' / 'milestones.json', Path(__file__).with_name('milestones.json')):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text(encoding='utf-8'))
            if isinstance(data, dict) and 'modules' in data: return data
    return dict(modules=[], milestones=[])


@dataclass
class _Page:
    nb: Path | None
    file: str
    title: str
    label: str
    group: str = ''


@dataclass
class SiteResult:
    "What `build_site` made: where, which pages, which notebooks failed to execute."
    out_dir: Path
    renderer: str
    pages: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool: return not self.failures

    @property
    def exit_code(self) -> int: return 0 if self.ok else 1

    def summary(self) -> str:
        s = (f'{len(self.pages)} pages in {self.out_dir} ({self.renderer} renderer, {self.seconds:.1f} s); '
             f'open {self.out_dir / "index.html"}')
        if self.failures:
            s += (f'\nWARNING: {len(self.failures)} notebook(s) failed while building the docs '
                  f'(their pages show the error): ' + '; '.join(f'{n}: {m}' for n, m in self.failures))
        for w in self.warnings: s += f'\nwarning: {w}'
        return s

    def __str__(self) -> str: return self.summary()


def _tree_hash(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        with contextlib.suppress(OSError):
            h.update(str(p.name).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _execute_all(root: Path, notebooks: list[Path], jobs: int, timeout: float, use_cache: bool, log) -> dict:
    "Execute each notebook (cached by content hash); {nb path: (executed nb dict or None, summary)}."
    settings = _settings(root)
    lib = root / settings.get('lib_path', settings.get('lib_name', 'tinytorch'))
    try:                                   # the notebook + the package files it imports, as tito keys its cache
        from milestones.engine import module_hash
        lib_name = settings.get('lib_name', 'tinytorch')
        nb_hash = lambda nb: module_hash(nb, lib, lib_name)
    except Exception:                      # no engine: every package file counts
        tree = _tree_hash(list(lib.rglob('*.py')) if lib.is_dir() else [])
        nb_hash = lambda nb: hashlib.sha256(nb.read_bytes() + tree.encode()).hexdigest()
    me = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    cache = root / CACHE_DIR
    cache.mkdir(parents=True, exist_ok=True)
    results = {}

    def one(nb: Path):
        with contextlib.suppress(OSError, ValueError):
            cells = json.loads(nb.read_text(encoding='utf-8')).get('cells', [])
            if not any(c.get('cell_type') == 'code' and _source(c).strip() for c in cells):
                return nb, None, dict(ok=True, seconds=0.0, nothing_to_run=True)   # prose only
        key = hashlib.sha256((nb_hash(nb) + me + sys.version).encode()).hexdigest()[:20]
        cached = cache / f'{nb.stem}.{key}.ipynb'
        if use_cache and cached.exists():
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(cached.read_text(encoding='utf-8'))
                meta = data.get('metadata', {}).get(SITE_META, {})
                if meta.get('ok'):
                    return nb, data, dict(meta, cached=True)
        with tempfile.TemporaryDirectory() as tmp:
            dest = Path(tmp) / nb.name
            summary = execute_notebook(nb, dest, root, timeout=timeout)
            data = json.loads(dest.read_text(encoding='utf-8')) if dest.exists() else None
            if data is not None and summary.get('ok'):
                for old in cache.glob(f'{nb.stem}.*.ipynb'):
                    with contextlib.suppress(OSError): old.unlink()
                shutil.copyfile(dest, cached.with_suffix('.tmp'))
                os.replace(cached.with_suffix('.tmp'), cached)
        return nb, data, summary

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for nb, data, summary in pool.map(one, notebooks):
            how = ('cached' if summary.get('cached') else 'no code' if summary.get('nothing_to_run')
                   else f'{summary.get("seconds", 0):.1f} s')
            state = 'ok' if summary.get('ok') else f'FAILED ({_failure_text(summary)})'
            log(f'  {nb.name:<28} {state}, {how}')
            results[nb] = (data, summary)
    return results


def _failure_text(summary: dict) -> str:
    e = summary.get('error') or {}
    cell = e.get('notebook_cell', e.get('cell'))
    where = f' in cell {cell + 1}' if isinstance(cell, int) else ''
    first = (e.get('evalue') or '').strip().splitlines()
    return f'{e.get("ename", "error")}{where}' + (f': {first[-1][:160]}' if first else '')


# =============================================================================== HTML

_CSS = """
:root { --fg:#1d2330; --muted:#5d6677; --line:#e2e5ea; --accent:#c2410c; --code-bg:#f6f8fa; --side:#f8f9fb; }
* { box-sizing: border-box; }
body { margin:0; font: 16px/1.6 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: var(--fg); }
a { color: #1d4ed8; text-decoration: none; } a:hover { text-decoration: underline; }
.layout { display:flex; min-height:100vh; }
nav.sidebar { width: 270px; flex: 0 0 270px; background: var(--side); border-right: 1px solid var(--line);
  padding: 18px 16px; position: sticky; top: 0; height: 100vh; overflow-y: auto; font-size: 14.5px; }
nav.sidebar .brand { font-weight: 700; font-size: 20px; color: var(--accent); display:block; margin-bottom: 10px; }
nav.sidebar h4 { margin: 16px 0 4px; font-size: 12.5px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); }
nav.sidebar ul { list-style: none; margin: 0; padding: 0; }
nav.sidebar li { margin: 1px 0; }
nav.sidebar li a, nav.sidebar li span.missing { display:block; padding: 2px 8px; border-radius: 4px; }
nav.sidebar li a.current { background: #fde7d9; color: var(--accent); font-weight: 600; }
nav.sidebar li span.missing { color: #9aa1ad; }
nav.sidebar ul.toc { margin: 2px 0 6px 14px; font-size: 13px; } nav.sidebar ul.toc a { padding: 1px 8px; color: var(--muted); }
main { flex: 1; min-width: 0; padding: 28px 48px 60px; max-width: 980px; }
h1 { font-size: 2.1em; margin-top: .2em; } h1, h2, h3 { line-height: 1.25; }
h2 { border-bottom: 1px solid var(--line); padding-bottom: .2em; margin-top: 1.6em; }
code { font: 13.5px/1.5 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--code-bg); padding: 1px 4px; border-radius: 4px; }
pre { background: var(--code-bg); padding: 12px 14px; border-radius: 6px; overflow-x: auto; border: 1px solid var(--line); }
pre code { background: none; padding: 0; }
.cell { margin: 14px 0; }
.cell .output { margin: 6px 0 0 0; border-left: 3px solid #cbd5e1; padding-left: 10px; overflow-x: auto; }
.cell .output pre { background: #fff; border: none; padding: 4px 0; margin: 0; }
.cell .output pre.stderr { color: #9a3412; }
.cell .output img { max-width: 100%; }
.missing-link { color: #8a93a3; }
.cell .note { color: var(--muted); font-size: 13px; font-style: italic; }
details.exported > summary { cursor: pointer; color: var(--muted); font-size: 13px; margin-bottom: 4px; }
details.exported > summary code { font-size: 12.5px; }
.error-box { border: 2px solid #dc2626; background: #fef2f2; color: #7f1d1d; border-radius: 6px; padding: 10px 14px; margin: 10px 0; }
.error-box pre { background: #fff7f7; border-color: #fecaca; color: #450a0a; }
.warning-box { border: 2px solid #f59e0b; background: #fffbeb; border-radius: 6px; padding: 10px 14px; margin: 10px 0; }
table { border-collapse: collapse; margin: 12px 0; font-size: 15px; display: block; overflow-x: auto; }
td code { white-space: nowrap; }
th, td { border: 1px solid var(--line); padding: 5px 10px; vertical-align: top; } th { background: var(--side); }
blockquote { margin: 10px 0; padding: 2px 14px; border-left: 4px solid var(--line); color: var(--muted); }
.math { font-family: "Latin Modern Math", "STIX Two Math", Cambria, serif; font-style: italic; }
div.math { text-align: center; margin: 10px 0; }
.pager { display:flex; justify-content: space-between; border-top: 1px solid var(--line); margin-top: 40px; padding-top: 12px; }
footer { color: var(--muted); font-size: 13px; margin-top: 30px; }
img.timeline { max-width: 100%; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
"""


def _pygments_css() -> str:
    try:
        from pygments.formatters import HtmlFormatter
        return HtmlFormatter(style='default').get_style_defs('.highlight')
    except ImportError:
        return ''


def _sidebar(pages: list[_Page], course: dict, current: _Page, toc: list[tuple[int, str, str]], title: str) -> str:
    by_nb = {p.nb.name: p for p in pages if p.nb is not None}
    used: set[str] = set()

    def item(p: _Page, label: str | None = None) -> str:
        cur = p.file == current.file
        cls = ' class="current"' if cur else ''
        s = f'<li><a href="{_attr(p.file)}"{cls}>{_esc(label or p.label)}</a>'
        if cur and toc:
            s += '<ul class="toc">' + ''.join(f'<li><a href="#{hid}">{_esc(text)}</a></li>'
                                              for level, hid, text in toc if level == 2) + '</ul>'
        return s + '</li>'

    home = next((p for p in pages if p.file == 'index.html'), None)
    parts = [f'<a class="brand" href="index.html">{_esc(title)}</a><ul>']
    if home: parts.append(item(home, 'Home'))
    progress = next((p for p in pages if p.file == 'progress.html'), None)
    if progress: parts.append(item(progress, 'Progress'))
    parts.append('</ul>')
    modules = {m['key']: m for m in course.get('modules', [])}
    for ms in course.get('milestones', []):
        parts.append(f'<h4>{_esc(ms.get("emoji", ""))} {_esc(ms["name"])}</h4><ul>')
        for key in ms.get('modules', []):
            m = modules.get(key)
            if not m: continue
            p = by_nb.get(m['notebook'])
            if p:
                used.add(p.file)
                parts.append(item(p))
            else:
                num = re.match(r'\d+', m['notebook'])
                parts.append(f'<li><span class="missing" title="{_attr(m["notebook"])} is not written yet">'
                             f'{num.group() + " " if num else ""}{_esc(m["name"])} ⏳</span></li>')
        parts.append('</ul>')
    others = [p for p in pages if p.file not in used and p.file not in ('index.html', 'progress.html')]
    if others:
        parts.append('<h4>More</h4><ul>' + ''.join(item(p) for p in others) + '</ul>')
    return '<nav class="sidebar">' + ''.join(parts) + '</nav>'


# Typesets the LaTeX when the reader is online; offline the formulas stay readable as plain TeX.
_MATHJAX = ('\n<script>window.MathJax = {tex: {inlineMath: [["\\\\(", "\\\\)"]]}};</script>'
            '\n<script async src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>')


def _page_html(title: str, site_title: str, sidebar: str, body: str, prev: _Page | None, nxt: _Page | None) -> str:
    mathjax = _MATHJAX if 'class="math"' in body else ''
    pager = '<div class="pager"><span>' + (f'<a href="{_attr(prev.file)}">← {_esc(prev.label)}</a>' if prev else '') + \
            '</span><span>' + (f'<a href="{_attr(nxt.file)}">{_esc(nxt.label)} →</a>' if nxt else '') + '</span></div>'
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)} – {_esc(site_title)}</title>
<link rel="stylesheet" href="assets/site.css">{mathjax}
</head><body><div class="layout">
{sidebar}
<main>
{body}
{pager}
<footer>Built from the notebooks in <code>nbs/</code> by <code>make docs</code>.</footer>
</main></div></body></html>
"""


def _render_output(out: dict, ctx: _Ctx) -> str:
    kind = out.get('output_type')
    if kind == 'stream':
        text = _ANSI.sub('', _text(out.get('text', '')))
        cls = ' class="stderr"' if out.get('name') == 'stderr' else ''
        return f'<pre{cls}>{_esc(text.rstrip())}</pre>' if text.strip() else ''
    if kind in ('execute_result', 'display_data'):
        data = out.get('data', {})
        if 'text/html' in data: return _text(data['text/html'])
        if 'image/svg+xml' in data: return _text(data['image/svg+xml'])
        for mime in ('image/png', 'image/jpeg', 'image/gif'):
            if mime in data:
                b64 = _text(data[mime]).replace('\n', '')
                return f'<img src="data:{mime};base64,{b64}" alt="figure">'
        if 'text/markdown' in data: return render_markdown(_text(data['text/markdown']), ctx=ctx)
        if 'text/latex' in data: return f'<div class="math">{_esc(_text(data["text/latex"]))}</div>'  # has its own $ or \\[
        if 'text/plain' in data: return f'<pre>{_esc(_ANSI.sub("", _text(data["text/plain"])))}</pre>'
        return ''
    if kind == 'error':
        tb = _ANSI.sub('', '\n'.join(_text(t).rstrip('\n') for t in out.get('traceback', [])))
        return (f'<div class="error-box"><strong>{_esc(out.get("ename", "Error"))}: {_esc(str(out.get("evalue", "")))}</strong>'
                f'<pre>{_esc(tb)}</pre></div>')
    return ''


_GOTO_FAILED = '<a href="#failed-cell">Go to the failing cell</a>.'


def _merge_traceback(outs: list) -> list:
    "IPython prints a readable traceback to stdout next to the error output: show it once, in the error box."
    errors = [o for o in outs if o.get('output_type') == 'error']
    if not errors: return outs
    kept, pretty = [], None
    for o in outs:
        text = _ANSI.sub('', _text(o.get('text', ''))) if o.get('output_type') == 'stream' else ''
        if pretty is None and 'Traceback (most recent call last)' in text:
            pretty = text.strip('\n')
            continue
        kept.append(o)
    if pretty:
        kept = [dict(o, traceback=[pretty]) if o is errors[0] else o for o in kept]
    return kept


def _render_notebook(nb: dict, summary: dict, ctx: _Ctx, lib_name: str, nb_name: str) -> str:
    parts = []
    default_exp = None
    err = summary.get('error') or None
    failed_cell = err.get('cell') if err else None
    skipped = set(summary.get('skipped') or [])
    if err:
        parts.append(f'<div class="warning-box"><strong>⚠ This notebook failed while the docs were built</strong> '
                     f'({_esc(_failure_text(summary))}). Cells after the failure were not run, so their outputs '
                     f'are missing{" (the failing cell is marked below)" if failed_cell is not None else ""}. Run '
                     f'<code>nbdev_test --path nbs/{_esc(nb_name)}</code> to see the full report. '
                     f'{_GOTO_FAILED if failed_cell is not None else ""}</div>')
        if failed_cell is None:
            parts.append(f'<div class="error-box"><pre>{_esc(_ANSI.sub("", err.get("evalue", "")))}</pre></div>')
    for idx, cell in enumerate(nb.get('cells', [])):
        source = _source(cell)
        if cell.get('cell_type') == 'markdown':
            parts.append(render_markdown(source, ctx=ctx))
            continue
        if cell.get('cell_type') != 'code': continue
        d = _directives(source)
        meta = cell.get('metadata', {}).get(SITE_META, {})
        if 'default_exp' in d: default_exp = d['default_exp'].split()[0] if d['default_exp'] else default_exp
        if {'hide', 'default_exp'} & d.keys() or d.get('include', '').lower() == 'false': continue
        code = _strip_directives(source)
        is_showdoc = bool(meta.get('auto_showdoc')) or bool(re.search(r'^show_doc\(', code, flags=re.M))  # as nbdev
        show_source = code.strip() and not is_showdoc and d.get('echo', '').lower() != 'false'
        outs = [] if d.get('output', '').lower() == 'false' else cell.get('outputs', []) or []
        html_parts = []
        if show_source:
            block = _code_block(code, 'python')
            if {'export', 'exports', 'exporti'} & d.keys():
                target = (d.get('export') or d.get('exports') or d.get('exporti') or default_exp or '').split()
                mod = f'{lib_name}/{target[0].replace(".", "/")}.py' if target else lib_name
                block = (f'<details class="exported" open><summary>exported to <code>{_esc(mod)}</code></summary>'
                         f'{block}</details>')
            html_parts.append(block)
        if err and failed_cell is not None and idx > failed_cell and not meta.get('auto_showdoc') and show_source:
            html_parts.append('<div class="note">not run: an earlier cell failed</div>')
        elif idx in skipped and show_source and not meta.get('auto_showdoc'):
            html_parts.append('<div class="note">not run when building the docs</div>')
        outs = _merge_traceback(outs)
        rendered = [r for r in (_render_output(o, ctx) for o in outs) if r]
        if rendered:
            html_parts.append('<div class="output">' + '\n'.join(rendered) + '</div>')
        if html_parts:
            anchor = ' id="failed-cell"' if idx == failed_cell else ''
            parts.append(f'<div class="cell"{anchor}>' + '\n'.join(html_parts) + '</div>')
    return '\n'.join(parts)


def _first_heading(nb: dict) -> str | None:
    for c in nb.get('cells', []):
        if c.get('cell_type') == 'markdown':
            m = re.search(r'^#\s+(.+?)\s*$', _source(c), re.M)
            if m: return _strip_tags(render_inline(m.group(1)))
    return None


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(text, encoding='utf-8')
    os.replace(tmp, path)


def _progress_writer():
    "The progress page writer from the milestone system, or None if it is not importable."
    for mod in ('milestones.progress', 'milestones.engine'):
        try:
            module = __import__(mod, fromlist=['write_progress'])
        except ImportError:
            continue
        if hasattr(module, 'write_progress'): return module.write_progress
    return None


def _progress_body(root: Path, out_dir: Path, writer, ctx: _Ctx) -> tuple[str, str | None]:
    "HTML body of the Progress page and a warning (None when all went well)."
    writer = writer or _progress_writer()
    if writer is None:
        return ('<h1 id="progress">Progress</h1><div class="warning-box">The progress engine '
                '(<code>milestones/progress.py</code>) is not available, so there is no status to show. '
                'Run <code>make milestone-status</code> in a complete checkout.</div>',
                'progress engine not available: Progress page has no status')
    try:
        import inspect
        params = inspect.signature(writer).parameters
        with _chdir(root):
            md_path, svg_path = writer(out_dir, root=root) if 'root' in params else writer(out_dir)
        md = Path(md_path).read_text(encoding='utf-8')
    except Exception as e:                                         # show it, never crash the whole site
        return (f'<h1 id="progress">Progress</h1><div class="error-box"><strong>The progress page could not be '
                f'generated</strong><pre>{_esc(type(e).__name__ + ": " + str(e))}</pre></div>',
                f'progress page failed: {type(e).__name__}: {e}')
    body = render_markdown(md, ctx=ctx)
    svg = Path(svg_path).name
    body = body.replace(f'src="{svg}"', f'src="{svg}" class="timeline"')
    if svg not in md:
        body = f'<p><img class="timeline" src="{_attr(svg)}" alt="milestone timeline"></p>\n' + body
    return body, None


@contextlib.contextmanager
def _chdir(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try: yield
    finally: os.chdir(old)


def _build_builtin(root: Path, out_dir: Path, *, execute: bool, jobs: int, timeout: float, use_cache: bool,
                   progress_writer, log) -> SiteResult:
    start = time.time()
    settings = _settings(root)
    nbs = root / settings.get('nbs_path', 'nbs')
    title = settings.get('title', 'TinyTorch')
    lib_name = settings.get('lib_name', 'tinytorch')
    result = SiteResult(out_dir=out_dir, renderer='built-in')
    notebooks = sorted(p for p in nbs.glob('*.ipynb') if not p.name.startswith(('_', '.')))
    if not notebooks:
        result.warnings.append(f'no notebooks found in {nbs}')
    course = _course(root)
    mod_by_nb = {m['notebook']: m for m in course.get('modules', [])}
    group_of = {key: ms['name'] for ms in course.get('milestones', []) for key in ms.get('modules', [])}

    # page names, with a fallback to the full stem when two notebooks would collide
    pages, taken = [], set()
    loaded = {}
    for nb_path in notebooks:
        try:
            loaded[nb_path] = json.loads(nb_path.read_text(encoding='utf-8'))
        except (OSError, ValueError) as e:
            loaded[nb_path] = dict(cells=[dict(cell_type='markdown', source=f'# {nb_path.stem}')])
            result.failures.append((nb_path.name, f'cannot read notebook: {e}'))
        file = page_name(nb_path.name)
        if file in taken or file == 'progress.html': file = nb_path.stem.lower() + '.html'
        taken.add(file)
        heading = _first_heading(loaded[nb_path]) or nb_path.stem
        mod = mod_by_nb.get(nb_path.name)
        num = re.match(r'\d+', nb_path.name)
        label = f'{num.group()} {mod["name"]}' if mod and num else heading
        pages.append(_Page(nb_path, file, heading, label, group_of.get(mod['key'], '') if mod else ''))
    pages.sort(key=lambda p: (p.file != 'index.html', p.nb.name if p.nb else ''))
    if not any(p.file == 'index.html' for p in pages):          # no nbs/index.ipynb: a plain contents page
        pages.insert(0, _Page(None, 'index.html', title, 'Home'))
        result.warnings.append(f'no {nbs.name}/index.ipynb: the home page is a plain list of pages')
    pages.append(_Page(None, 'progress.html', 'Progress', 'Progress'))
    link_map = {p.nb.name: p.file for p in pages if p.nb is not None}

    log(f'Building the docs site with the built-in renderer ({len(notebooks)} notebook'
        f'{"s" if len(notebooks) != 1 else ""})...')
    executed = _execute_all(root, notebooks, jobs, timeout, use_cache, log) if execute and notebooks else {}

    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob('*.html'): old.unlink()
    _write(out_dir / 'assets' / 'site.css', _CSS + _pygments_css())
    copied_assets: set[str] = set()

    for k, page in enumerate(pages):
        ctx = _Ctx(link_map)
        if page.file == 'index.html' and page.nb is None:
            body = f'<h1 id="contents">{_esc(title)}</h1><ul>' + ''.join(
                f'<li><a href="{_attr(p.file)}">{_esc(p.label)}</a></li>' for p in pages if p.file != 'index.html') + '</ul>'
        elif page.nb is None:
            body, warning = _progress_body(root, out_dir, progress_writer, ctx)
            if warning: result.warnings.append(warning)
        else:
            nb, summary = executed.get(page.nb, (None, {}))
            if nb is None:
                nb = loaded[page.nb]
                if execute and summary: pass                     # failure summary kept below
                elif not execute: summary = dict(ok=True)
            if execute and not summary.get('ok', False):
                result.failures.append((page.nb.name, _failure_text(summary)))
            body = _render_notebook(nb, summary, ctx, lib_name, page.nb.name)
            for asset in ctx.assets:                              # images the prose refers to
                src = (page.nb.parent / asset).resolve()
                if src.is_file() and asset not in copied_assets and not Path(asset).is_absolute():
                    dest = out_dir / asset
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dest)
                    copied_assets.add(asset)
        prev = pages[k - 1] if k > 0 else None
        nxt = pages[k + 1] if k + 1 < len(pages) else None
        html_text = _page_html(page.title, title, _sidebar(pages, course, page, ctx.headings, title), body, prev, nxt)
        _write(out_dir / page.file, html_text)
        result.pages.append(out_dir / page.file)
    result.seconds = time.time() - start
    return result


def _nbdev_docs_command() -> list[str]:
    exe = Path(sys.executable).with_name('nbdev_docs')          # the venv's, even when it is not activated
    return [str(exe)] if exe.exists() else [shutil.which('nbdev_docs') or 'nbdev_docs']


def _build_quarto(root: Path, out_dir: Path, progress_writer, log) -> SiteResult:
    "nbdev_docs (Quarto), then the Progress page on top. README.md is kept as it was."
    start = time.time()
    result = SiteResult(out_dir=out_dir, renderer='quarto')
    settings = _settings(root)
    doc_path = root / settings.get('doc_path', '_docs')
    cmd = _nbdev_docs_command()
    readme = root / 'README.md'
    saved = readme.read_bytes() if readme.exists() else None       # nbdev_docs rewrites it from index.ipynb
    log('Building the docs site with Quarto (nbdev_docs)...')
    try:
        p = subprocess.run(cmd, cwd=str(root))
    finally:
        if saved is not None and (not readme.exists() or readme.read_bytes() != saved):
            readme.write_bytes(saved)
    if p.returncode != 0:
        result.failures.append(('nbdev_docs', f'exit code {p.returncode}'))
        result.seconds = time.time() - start
        return result
    if doc_path.resolve() != out_dir.resolve():
        shutil.copytree(doc_path, out_dir, dirs_exist_ok=True)
    ctx = _Ctx()
    body, warning = _progress_body(root, out_dir, progress_writer, ctx)
    if warning: result.warnings.append(warning)
    home, prog = _Page(None, 'index.html', 'Home', 'Home'), _Page(None, 'progress.html', 'Progress', 'Progress')
    title = settings.get('title', 'TinyTorch')
    _write(out_dir / 'assets' / 'site.css', _CSS + _pygments_css())
    _write(out_dir / 'progress.html', _page_html('Progress', title, _sidebar([home, prog], _course(root), prog,
                                                                              ctx.headings, title), body, home, None))
    result.pages = sorted(out_dir.glob('*.html'))
    result.seconds = time.time() - start
    return result


def build_site(project_root: Path | str | None = None, out_dir: Path | str | None = None, *,
               root: Path | str | None = None, use_quarto: bool | None = None, execute: bool = True,
               jobs: int | None = None, timeout: float = 300, use_cache: bool = True,
               progress_writer=None, log=print) -> SiteResult:
    """Build the docs site of the project at `project_root` (default: cwd) into `out_dir` (default: doc_path, `_docs`).

    Quarto on PATH (and TINYTORCH_DOCS_RENDERER not 'builtin') -> nbdev_docs; otherwise the built-in
    renderer executes every notebook (IN_TEST=1) and writes static pages. Failing notebooks still get
    a page, with the error in a red box, and are listed in the result's `failures`."""
    root_path = Path(project_root or root or Path.cwd()).resolve()
    settings = _settings(root_path)
    out = Path(out_dir).resolve() if out_dir else root_path / settings.get('doc_path', '_docs')
    if use_quarto is None:
        use_quarto = bool(shutil.which('quarto')) and os.environ.get('TINYTORCH_DOCS_RENDERER', '').lower() != 'builtin'
    old_in_test = os.environ.get('IN_TEST')
    os.environ['IN_TEST'] = '1'           # keep heavy demos small, as nbdev_test does
    try:
        builtin = dict(execute=execute, jobs=jobs or min(4, os.cpu_count() or 1), timeout=timeout,
                       use_cache=use_cache, progress_writer=progress_writer, log=log)
        if use_quarto:
            result = _build_quarto(root_path, out, progress_writer, log)
            if not result.ok:                     # a site from the built-in renderer beats no site at all
                reason = '; '.join(m for _, m in result.failures)
                log(f'nbdev_docs failed ({reason}); building with the built-in renderer instead')
                result = _build_builtin(root_path, out, **builtin)
                result.warnings.append(f'nbdev_docs (Quarto) failed ({reason}); the built-in renderer made this site')
        else:
            result = _build_builtin(root_path, out, **builtin)
    finally:
        if old_in_test is None: os.environ.pop('IN_TEST', None)
        else: os.environ['IN_TEST'] = old_in_test
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog='python -m milestones.site', description='Build the TinyTorch docs site.')
    p.add_argument('--root', default=None, help='project root (default: current directory)')
    p.add_argument('--out', default=None, help='output folder (default: _docs)')
    p.add_argument('--builtin', action='store_true', help='use the built-in renderer even when Quarto is installed')
    p.add_argument('--no-cache', action='store_true', help='re-execute every notebook')
    p.add_argument('--execute', nargs=2, metavar=('SRC', 'DEST'), help=argparse.SUPPRESS)
    p.add_argument('--skip-flags', default='', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.execute:
        _run_notebook(Path(args.execute[0]).resolve(), Path(args.execute[1]).resolve(),
                      set(filter(None, args.skip_flags.split(','))))
        return 0
    result = build_site(args.root, args.out, use_quarto=False if args.builtin else None, use_cache=not args.no_cache)
    print(result.summary())
    return result.exit_code


if __name__ == '__main__':
    sys.exit(main())
