"""Progress page writer: `progress.md` (status tables + timeline embed) and `timeline.svg`.

`write_progress(out_dir)` is called by `tito milestone status --write-docs`
(`make milestone-status`) and by the docs builder (milestones/site.py). Module states come
from the cached progress engine (milestones/engine.py). matplotlib is imported lazily, with the
Agg backend, only when the SVG is drawn. Both files are written atomically.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from .engine import Engine, atomic_write_bytes, atomic_write_text, _now
from .render import render_markdown, milestone_note
from .states import MODULE_STATES, module_look, milestone_look

DRAWING_VERSION = 2  # bump when draw_timeline_svg changes, so old SVGs are redrawn
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
        for i, ms in enumerate(ms_states):
            c = milestone_look(ms.state).hex
            ax.scatter([i], [0.6], s=900, color=c, edgecolor='#333333', lw=1.5, zorder=2)
            ax.text(i, 0.6, f'{ms.percent}%', ha='center', va='center', fontsize=8, weight='bold', zorder=3)
            ax.text(i, 1.2, ms.milestone.name, ha='center', va='center', fontsize=10, weight='bold')
            note = milestone_note(ms)
            ax.text(i, -0.05, note, ha='center', va='center', fontsize=8, color='#444444')
            for j, st in enumerate(ms.modules):
                y = -0.75 - j * 0.62
                box = FancyBboxPatch((i - 0.42, y - 0.22), 0.84, 0.44, boxstyle='round,pad=0.02,rounding_size=0.08',
                                     facecolor=module_look(st.state).hex, edgecolor='#555555', lw=0.8)
                ax.add_patch(box)
                ax.text(i, y, course.module_by_key[st.key].label, ha='center', va='center', fontsize=8)
        shown = {st.state for ms in ms_states for st in ms.modules}
        handles = [Patch(facecolor=look.hex, edgecolor='#555555', label=look.word) for k, look in MODULE_STATES.items()
                   if k in shown and k != 'absent' or (k == 'absent' and 'todo' not in shown and k in shown)]
        ax.legend(handles=handles, loc='upper center', bbox_to_anchor=(0.5, 0.0), ncol=4, frameon=False, fontsize=8)
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


def write_progress(out_dir: Path, engine: Engine | None = None, root: Path | None = None):
    """Write `progress.md` and `timeline.svg` into `out_dir`; returns (md_path, svg_path)."""
    engine = engine or Engine(root)
    states = engine.module_states()
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
    passing = sum(st.state == 'pass' for st in states.values())
    md = ['# Progress', '',
          f'{passing} of {len(states)} modules pass their notebook tests; '
          f'{sum(bool(m.unlocked) for m in ms_states)} of {len(ms_states)} milestones are unlocked. '
          'Regenerate with `make milestone-status`.', '',
          '![TinyTorch milestone timeline](timeline.svg)', '',
          render_markdown(engine.course, states, ms_states),
          f'_Generated {_now().strftime("%Y-%m-%d %H:%M %Z")} by `tito milestone status --write-docs`._', '']
    atomic_write_text(md_path, '\n'.join(md))
    return md_path, svg_path
