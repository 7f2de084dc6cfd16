"""Text rendering for `tito`: milestone status, timeline and the module table.

Pure functions from engine states (milestones/engine.py) to strings; icons, colours and words come
from the one state table in milestones/states.py. Used by the CLI (milestones/tito.py) and, for the
markdown table, by the progress writer (milestones/progress.py). Colour is ANSI only when the
caller says so (stdout is a TTY and NO_COLOR is unset); the unicode bars and icons are kept either way.
"""
from __future__ import annotations

import os
import sys

from .engine import ModuleState, MilestoneState, Course
from .states import module_look, milestone_look

BAR_WIDTH = 20
_ANSI = {'green': '32', 'yellow': '33', 'dim': '2', 'bold': '1', 'cyan': '36', 'red': '31'}


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


def _mod(s: Style, course: Course, st: ModuleState) -> str:
    return f'{st.icon} {s(course.module_by_key[st.key].label, module_look(st.state).colour)}'


def _focus(ms_states: list[MilestoneState]):
    return next((s for s in ms_states if not s.unlocked), None)


def _reason(st: ModuleState) -> str:
    return f'{st.reason} (cached)' if st.cached else st.reason


def milestone_note(ms: MilestoneState) -> str:
    """'unlocked 2026-01-02', 'regressed (unlocked 2026-01-02)', 'ready to unlock', 'in progress', ..."""
    if ms.state == 'unlocked':
        return f'unlocked {ms.unlocked["date"]}'
    if ms.state == 'regressed':
        return f'regressed (unlocked {ms.unlocked["date"]}, modules now fail)'
    return milestone_look(ms.state).word


def _next_module(course: Course, states: dict[str, ModuleState]):
    """The first module to work on: a failing one before an untouched one, never a locked one."""
    order = [m for m in course.modules if states[m.key].state not in ('pass', 'locked')]
    return order[0] if order else None


def render_status(course: Course, states: dict[str, ModuleState], ms_states: list[MilestoneState],
                  detailed: bool = False, color: bool = False, runs: int | None = None) -> str:
    s = Style(color)
    width = max(len(m.milestone.name) for m in ms_states)
    out = [s('TinyTorch milestone status', 'bold'), '']
    focus = _focus(ms_states)
    for ms in ms_states:
        m, look = ms.milestone, milestone_look(ms.state)
        head = (f'{ms.icon} {s(m.name.ljust(width), "bold")}  {ms.percent:>3d}%  '
                f'{s(bar(ms.passing, ms.total), look.colour)}  {ms.passing}/{ms.total} modules')
        if ms.state in ('unlocked', 'regressed', 'ready'):
            head += f'  {s(milestone_note(ms), look.colour)}'
        out.append(head)
        if detailed:
            name_w = max(len(course.module_by_key[k].label) for k in m.modules)
            for st in ms.modules:
                label = course.module_by_key[st.key].label.ljust(name_w)
                out.append(f'   {st.icon} {s(label, module_look(st.state).colour)}  {_reason(st)}')
        else:
            out.append('   ' + '  '.join(_mod(s, course, st) for st in ms.modules))
        out.append(f'   {ms.icon} {s(m.capability, "cyan")}')
        for line in m.i_can:
            out.append(f'      {ms.icon} {line}')
        if ms.state == 'ready':
            if ms is focus:
                out.append('   → ready to unlock: run `tito milestone unlock` to run its capability test and unlock it')
            else:  # milestones unlock in course order
                out.append(f'   → all modules pass; it can be unlocked once {focus.milestone.name} is')
        elif ms.state == 'regressed':
            broken = ', '.join(course.module_by_key[st.key].label for st in ms.modules if st.state != 'pass')
            out.append(f'   {s("! regressed: unlocked earlier, but these modules no longer pass: " + broken, "red")}')
        out.append('')
    passing = sum(st.state == 'pass' for st in states.values())
    unlocked = sum(ms.state == 'unlocked' for ms in ms_states)
    out.append(f'Overall:       {bar(passing, len(states))}  {passing}/{len(states)} modules pass, '
               f'{unlocked}/{len(ms_states)} milestones unlocked')
    regressed = [ms.milestone.name for ms in ms_states if ms.state == 'regressed']
    if regressed:
        out.append(f'Regressed:     {", ".join(regressed)} (fix these modules before unlocking more)')
    if focus is None:
        out.append('Current focus: every milestone is unlocked. You built a complete ML framework.'
                   if not regressed else 'Current focus: every milestone was unlocked; fix the regressions above.')
    else:
        extra = 'ready to unlock' if focus.state == 'ready' else f'{focus.passing}/{focus.total} modules pass'
        out.append(f'Current focus: {s(focus.milestone.name, "bold")} ({focus.percent}%, {extra})')
    nxt = _next_module(course, states)
    if nxt is None:
        locked = [st for st in states.values() if st.state == 'locked']
        out.append('Next module:   none, all modules pass' if not locked else
                   f'Next module:   {locked[0].reason}')
    else:
        st = states[nxt.key]
        nb = course.notebook_path(nxt).relative_to(course.root)
        todo = {'absent': f'write {nb}', 'todo': f'start {nb}', 'untested': 'run `tito milestone status` to test it'}
        out.append(f'Next module:   {st.icon} {nxt.label} ({todo.get(st.state, "fix: " + st.reason)})')
    cached = sum(st.cached for st in states.values())
    if runs is not None:
        out.append(s(f'Module tests:  {runs} run, {cached} from cache', 'dim'))
    return '\n'.join(out)


def render_timeline(course: Course, ms_states: list[MilestoneState], horizontal: bool = False,
                    color: bool = False) -> str:
    s = Style(color)
    if horizontal:
        return ' → '.join(f'{ms.icon} {s(ms.milestone.short, milestone_look(ms.state).colour)}' for ms in ms_states)
    out = [s('TinyTorch timeline', 'bold'), '│']
    for i, ms in enumerate(ms_states):
        last = i == len(ms_states) - 1
        out.append(f'{"└" if last else "├"}── {ms.icon} {s(ms.milestone.name, "bold")}  '
                   f'{ms.percent}%  {s(milestone_note(ms), milestone_look(ms.state).colour)}')
        stem = '    ' if last else '│   '
        for j, st in enumerate(ms.modules):
            branch = '└──' if j == len(ms.modules) - 1 else '├──'
            out.append(f'{stem}{branch} {_mod(s, course, st)}')
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
        out.append(f'{m.number:02d}  {s(m.name.ljust(name_w), module_look(st.state).colour)}  '
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
        mods = ' · '.join(f'{st.icon} {course.module_by_key[st.key].name}' for st in ms.modules)
        out.append(f'| {ms.milestone.name} | {ms.icon} {milestone_note(ms)} | {ms.percent}% `{bar(ms.passing, ms.total, 10)}` '
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
