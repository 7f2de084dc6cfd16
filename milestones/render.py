"""Text rendering for `tito`: milestone status, timeline and the module table.

Pure functions from engine states (milestones/engine.py) to strings; used by the CLI
(milestones/tito.py) and, for the markdown table, by the progress writer (milestones/progress.py).
Colour is ANSI only when the caller says so (stdout is a TTY and NO_COLOR is unset); the
unicode bars and ✅ 🔄 ⏳ icons are kept either way.
"""
from __future__ import annotations

import os
import sys

from .engine import ModuleState, MilestoneState, Course

BAR_WIDTH = 20
_ANSI = {'green': '32', 'yellow': '33', 'dim': '2', 'bold': '1', 'cyan': '36', 'red': '31'}
STATE_COLOUR = {'pass': 'green', 'fail': 'yellow', 'absent': 'dim', 'untested': 'dim',
                'unlocked': 'green', 'in_progress': 'yellow', 'not_started': 'dim'}
MILESTONE_WORDS = {'unlocked': 'unlocked', 'in_progress': 'in progress', 'not_started': 'not started'}


def use_color(stream=None, env=None) -> bool:
    """ANSI colour only for a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    stream = stream if stream is not None else sys.stdout
    env = os.environ if env is None else env
    if env.get('NO_COLOR'):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Style:
    def __init__(self, color: bool):
        self.color = color

    def __call__(self, text: str, *names: str) -> str:
        if not self.color or not names:
            return text
        codes = ';'.join(_ANSI[n] for n in names if n in _ANSI)
        return f'\033[{codes}m{text}\033[0m'


def bar(passing: int, total: int, width: int = BAR_WIDTH) -> str:
    """A unicode ticker bar, e.g. ████████░░░░."""
    filled = round(width * passing / total) if total else width
    return '█' * filled + '░' * (width - filled)


def _module_label(course: Course, key: str) -> str:
    return course.module_by_key[key].label


def _next_module(course: Course, states: dict[str, ModuleState]):
    return next((m for m in course.modules if states[m.key].state != 'pass'), None)


def _focus(ms_states: list[MilestoneState]):
    return next((s for s in ms_states if not s.unlocked), None)


def _reason(st: ModuleState) -> str:
    if st.state == 'absent':
        return st.reason
    return f'{st.reason} (cached)' if st.cached else st.reason


def render_status(course: Course, states: dict[str, ModuleState], ms_states: list[MilestoneState],
                  detailed: bool = False, color: bool = False, runs: int | None = None) -> str:
    s = Style(color)
    width = max(len(m.milestone.name) for m in ms_states)
    out = [s('TinyTorch milestone status', 'bold'), '']
    focus = _focus(ms_states)
    for ms in ms_states:
        m = ms.milestone
        colour = 'green' if ms.complete else STATE_COLOUR[ms.state]
        head = (f'{ms.icon} {s(m.name.ljust(width), "bold")}  {ms.percent:>3d}%  '
                f'{s(bar(ms.passing, ms.total), colour)}  {ms.passing}/{ms.total} modules')
        if ms.unlocked:
            head += f'  {s("unlocked " + ms.unlocked["date"], "green")}'
        out.append(head)
        if detailed:
            name_w = max(len(course.module_by_key[k].label) for k in m.modules)
            for st in ms.modules:
                label = _module_label(course, st.key).ljust(name_w)
                out.append(f'   {st.icon} {s(label, STATE_COLOUR[st.state])}  {_reason(st)}')
        else:
            out.append('   ' + '  '.join(f'{st.icon} {s(_module_label(course, st.key), STATE_COLOUR[st.state])}'
                                         for st in ms.modules))
        cap_icon = ms.icon
        out.append(f'   {cap_icon} {s(m.capability, "cyan")}')
        for line in m.i_can:
            out.append(f'      {cap_icon} {line}')
        if not ms.unlocked and ms.complete:
            if ms is focus:
                out.append('   → all modules pass: run `tito milestone unlock` to check the capability test and unlock it')
            else:  # milestones unlock in course order
                out.append(f'   → all modules pass; it can be unlocked once {focus.milestone.name} is')
        elif ms.unlocked and not ms.complete:
            out.append(f'   {s("! unlocked earlier, but some modules no longer pass", "red")}')
        out.append('')
    passing = sum(st.state == 'pass' for st in states.values())
    unlocked = sum(bool(ms.unlocked) for ms in ms_states)
    out.append(f'Overall:       {bar(passing, len(states))}  {passing}/{len(states)} modules pass, '
               f'{unlocked}/{len(ms_states)} milestones unlocked')
    if focus is None:
        out.append('Current focus: every milestone is unlocked. You built a complete ML framework.')
    else:
        extra = 'ready to unlock' if focus.complete else f'{focus.passing}/{focus.total} modules pass'
        out.append(f'Current focus: {s(focus.milestone.name, "bold")} ({focus.percent}%, {extra})')
    nxt = _next_module(course, states)
    if nxt is None:
        out.append('Next module:   none, all modules pass')
    else:
        st = states[nxt.key]
        todo = (f'start {course.notebook_path(nxt).relative_to(course.root)}' if st.state == 'absent'
                else f'fix: {st.reason}')
        out.append(f'Next module:   {st.icon} {nxt.label} ({todo})')
    cached = sum(st.cached for st in states.values())
    if runs is not None:
        out.append(s(f'Module tests:  {runs} run, {cached} from cache', 'dim'))
    return '\n'.join(out)


def render_timeline(course: Course, ms_states: list[MilestoneState], horizontal: bool = False,
                    color: bool = False) -> str:
    s = Style(color)
    if horizontal:
        return ' → '.join(f'{ms.icon} {s(ms.milestone.short, STATE_COLOUR[ms.state])}' for ms in ms_states)
    out = [s('TinyTorch timeline', 'bold'), '│']
    for i, ms in enumerate(ms_states):
        last = i == len(ms_states) - 1
        note = f'unlocked {ms.unlocked["date"]}' if ms.unlocked else MILESTONE_WORDS[ms.state]
        out.append(f'{"└" if last else "├"}── {ms.icon} {s(ms.milestone.name, "bold")}  '
                   f'{ms.percent}%  {s(note, STATE_COLOUR[ms.state])}')
        stem = '    ' if last else '│   '
        for j, st in enumerate(ms.modules):
            branch = '└──' if j == len(ms.modules) - 1 else '├──'
            out.append(f'{stem}{branch} {st.icon} {s(_module_label(course, st.key), STATE_COLOUR[st.state])}')
        if not last:
            out.append('│')
    return '\n'.join(out)


def render_module_table(course: Course, states: dict[str, ModuleState], color: bool = False,
                        runs: int | None = None) -> str:
    s = Style(color)
    name_w = max(len(m.name) for m in course.modules)
    ms_w = max(len(m.short) for m in course.milestones)
    out = [s(f' #  {"Module".ljust(name_w)}  {"Milestone".ljust(ms_w)}  State  Reason', 'bold')]
    for m in course.modules:
        st = states[m.key]
        ms = course.milestone_of(m.key)
        out.append(f'{m.number:02d}  {s(m.name.ljust(name_w), STATE_COLOUR[st.state])}  '
                   f'{(ms.short if ms else "-").ljust(ms_w)}  {st.icon}     {_reason(st)}')
    passing = sum(st.state == 'pass' for st in states.values())
    out.append('')
    out.append(f'{bar(passing, len(states))}  {passing}/{len(states)} modules pass')
    if runs is not None:
        cached = sum(st.cached for st in states.values())
        out.append(s(f'Module tests: {runs} run, {cached} from cache', 'dim'))
    return '\n'.join(out)


def _md_escape(text: str) -> str:
    return text.replace('|', '\\|').replace('\n', ' ')


def render_markdown(course: Course, states: dict[str, ModuleState], ms_states: list[MilestoneState]) -> str:
    """The status as markdown tables (milestones, then modules) for the progress page."""
    out = ['| Milestone | State | Progress | Modules | Capability |', '|---|---|---|---|---|']
    for ms in ms_states:
        word = (f'unlocked {ms.unlocked["date"]}' if ms.unlocked else MILESTONE_WORDS[ms.state])
        mods = ' · '.join(f'{st.icon} {course.module_by_key[st.key].name}' for st in ms.modules)
        out.append(f'| {ms.milestone.name} | {ms.icon} {word} | {ms.percent}% `{bar(ms.passing, ms.total, 10)}` '
                   f'{ms.passing}/{ms.total} | {mods} | {_md_escape(ms.milestone.capability)} |')
    out += ['', '## What I can do', '']
    for ms in ms_states:
        out.append(f'**{ms.milestone.name}**: {ms.icon} {_md_escape(ms.milestone.capability)}')
        out.append('')
        out += [f'- {ms.icon} {_md_escape(line)}' for line in ms.milestone.i_can]
        out.append('')
    out += ['## Modules', '', '| # | Module | Notebook | State | Reason |', '|---|---|---|---|---|']
    for m in course.modules:
        st = states[m.key]
        out.append(f'| {m.number:02d} | {m.name} | `{m.notebook}` | {st.icon} | {_md_escape(st.reason)} |')
    return '\n'.join(out) + '\n'
