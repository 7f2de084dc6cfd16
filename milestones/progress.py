"""The Progress page: `progress.md` (status with SVG progress bars) and `timeline.svg` (matplotlib).

`write_progress(out_dir)` is called by `tito milestone status --write-docs` (`make milestone-status`)
and by the docs build (milestones/site.py). It never runs a test: module states come from the
engine's cache (`module_states(run=False)`), so a module changed since its last test shows as
untested. Icons, colours and words come from the one table of states (milestones/states.py), which
gives a state it does not know a neutral look. Both files are written atomically.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import html
import io
import json
from pathlib import Path

from .engine import Engine, atomic_write_bytes, atomic_write_text
from .render import milestone_note
from .states import NEUTRAL, milestone_look, module_look

DRAWING_VERSION = 3  # bump when draw_timeline_svg changes, so old SVGs are redrawn


def word(state: str) -> str:
    "A module state in words; one the table does not know yet is shown by its name."
    look = module_look(state)
    return state.replace('_', ' ') if look is NEUTRAL else look.word


def bar_svg(states: list[str], width: int = 160, height: int = 14) -> str:
    "An inline SVG bar with one segment per module, coloured by its state."
    n, done = max(len(states), 1), sum(s == 'pass' for s in states)
    w = width / n
    rects = ''.join(f'<rect x="{i * w:.1f}" width="{w - 1:.1f}" height="{height}" rx="2" fill="{module_look(s).hex}">'
                    f'<title>{html.escape(word(s))}</title></rect>' for i, s in enumerate(states))
    return (f'<svg class="bar" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{done} of {len(states)} modules pass" xmlns="http://www.w3.org/2000/svg">{rects}</svg>')


def draw_timeline_svg(course, ms_states, fmt: str = 'svg') -> bytes:
    """The milestone timeline as SVG bytes: milestones left to right, their modules below."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch, Patch

    matplotlib.rcParams['svg.hashsalt'] = 'tinytorch'  # stable ids, so reruns give the same file
    matplotlib.rcParams['svg.fonttype'] = 'none'        # keep text as text
    n = len(ms_states)
    rows = max(len(ms.modules) for ms in ms_states)
    bottom = -0.75 - (rows - 1) * 0.62 - 0.35
    fig, ax = plt.subplots(figsize=(2.4 * n + 0.6, 0.75 * (1.55 - bottom) + 0.4))
    try:
        ax.set_xlim(-0.75, n - 0.25)
        ax.set_ylim(bottom, 1.55)
        ax.axis('off')
        ax.plot([0, n - 1], [0.6, 0.6], color='#888888', lw=3, zorder=1)
        seen = {}   # module state -> its look, in drawing order, for the legend
        for i, ms in enumerate(ms_states):
            ax.scatter([i], [0.6], s=900, color=milestone_look(ms.state).hex, edgecolor='#333333', lw=1.5, zorder=2)
            ax.text(i, 0.6, f'{ms.percent}%', ha='center', va='center', fontsize=8, weight='bold', zorder=3)
            ax.text(i, 1.2, ms.milestone.name, ha='center', va='center', fontsize=10, weight='bold')
            ax.text(i, -0.05, milestone_note(ms), ha='center', va='center', fontsize=8, color='#444444')
            for j, st in enumerate(ms.modules):
                look = seen.setdefault(st.state, module_look(st.state))
                y = -0.75 - j * 0.62
                ax.add_patch(FancyBboxPatch((i - 0.42, y - 0.22), 0.84, 0.44, boxstyle='round,pad=0.02,rounding_size=0.08',
                                            facecolor=look.hex, edgecolor='#555555', lw=0.8))
                ax.text(i, y, course.module_by_key[st.key].label, ha='center', va='center', fontsize=8)
        by_colour = {}   # states drawn alike share one legend entry
        for state, look in seen.items(): by_colour.setdefault(look.hex, []).append(word(state))
        handles = [Patch(facecolor=c, edgecolor='#555555', label=' / '.join(w)) for c, w in by_colour.items()]
        ax.legend(handles=handles, loc='upper center', bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 4),
                  frameon=False, fontsize=8)
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, bbox_inches='tight', **({'metadata': {'Date': None}} if fmt == 'svg' else {}))
        return buf.getvalue()
    finally:
        plt.close(fig)


def _fingerprint(course, ms_states) -> str:
    """Everything the timeline shows, hashed: same fingerprint, same picture."""
    drawn = [(ms.milestone.name, ms.state, ms.percent, (ms.unlocked or {}).get('date'),
              [(course.module_by_key[st.key].label, st.state) for st in ms.modules]) for ms in ms_states]
    return hashlib.sha256(json.dumps([DRAWING_VERSION, drawn]).encode()).hexdigest()[:16]


def _cell(text: str) -> str: return html.escape(str(text), quote=False).replace('|', '&#124;').replace('\n', ' ')


def progress_markdown(course, states, ms_states) -> str:
    "The page's markdown: milestones with bars, what each lets you do, and every module's state and reason."
    def page(m):   # link the notebook only when it exists, so no link is dead
        return f'[{_cell(m.name)}]({m.notebook})' if course.notebook_path(m).is_file() else _cell(m.name)
    passing = sum(st.state == 'pass' for st in states.values())
    md = ['# Progress', '', f'{bar_svg([st.state for st in states.values()], 320, 18)} **{passing} of {len(states)} modules** '
          f'pass their tests; {sum(bool(m.unlocked) for m in ms_states)} of {len(ms_states)} milestones are unlocked.', '',
          '![TinyTorch milestone timeline](timeline.svg)', '',
          '| Milestone | State | Progress | Modules |', '|---|---|---|---|']
    for ms in ms_states:
        state = milestone_note(ms)
        mods = ' · '.join(f'{st.icon} {_cell(course.module_by_key[st.key].name)}' for st in ms.modules)
        md.append(f'| {_cell(ms.milestone.name)} | {ms.icon} {state} | {ms.percent}% '
                  f'{bar_svg([st.state for st in ms.modules])} {ms.passing}/{ms.total} | {mods} |')
    md += ['', '## What I can do', '']
    for ms in ms_states:
        md += [f'**{ms.milestone.emoji} {_cell(ms.milestone.name)}**: {ms.icon} {_cell(ms.milestone.capability)}', '',
               *[f'- {_cell(line)}' for line in ms.milestone.i_can], '']
    md += ['## Modules', '', '| # | Module | State | Details |', '|---|---|---|---|']
    for m in course.modules:
        st = states[m.key]
        md.append(f'| {m.number:02d} | {page(m)} | {st.icon} {word(st.state)} | {_cell(st.reason)} |')
    now = dt.datetime.now(dt.timezone.utc).astimezone().strftime('%Y-%m-%d %H:%M %Z')
    md += ['', f'_Written {now} from the cached test results; `make milestone-status` tests what changed._', '']
    return '\n'.join(md)


def write_progress(out_dir: Path, engine: Engine | None = None, root: Path | None = None):
    """Write `progress.md` and `timeline.svg` into `out_dir`; returns (md_path, svg_path). Runs no test."""
    engine = engine or Engine(root)
    states = engine.module_states(run=False)
    ms_states = engine.milestone_states(states)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    svg_path, md_path = out_dir / 'timeline.svg', out_dir / 'progress.md'
    # Redrawing needs matplotlib (~1 s to import): skip it when the states drawn are unchanged.
    mark = f'<!-- tito-timeline {_fingerprint(engine.course, ms_states)} -->'.encode()
    try:
        current = svg_path.read_bytes()[:1000]
    except OSError:
        current = b''
    if mark not in current:
        svg = draw_timeline_svg(engine.course, ms_states)
        head, sep, rest = svg.partition(b'\n')  # keep the XML declaration first
        atomic_write_bytes(svg_path, head + sep + mark + b'\n' + rest)
    atomic_write_text(md_path, progress_markdown(engine.course, states, ms_states))
    return md_path, svg_path
