"""The one table of module and milestone states: icon, colour and words for each.

The progress engine (milestones/engine.py) only computes state keys; everything that shows a state
(the `tito` renderers in milestones/render.py, the progress page in milestones/progress.py and the
docs site) looks it up here.
"""
from __future__ import annotations

from typing import NamedTuple


class Look(NamedTuple):
    icon: str
    colour: str   # a name from render.Style: green, yellow, red, cyan, dim
    hex: str      # for pictures (the timeline SVG, the docs site)
    word: str     # short label, e.g. in a legend


MODULE_STATES = {
    'pass':     Look('✅', 'green', '#2e9e44', 'tests pass'),
    'fail':     Look('🔄', 'yellow', '#f0a202', 'started, failing'),
    'locked':   Look('🔒', 'dim', '#9db4c0', 'waiting on an earlier module'),
    'edited':   Look('✏️', 'red', '#d1495b', 'tests edited'),
    'todo':     Look('⏳', 'dim', '#c8c8c8', 'stubs untouched'),
    'absent':   Look('⏳', 'dim', '#c8c8c8', 'not present'),
    'untested': Look('❔', 'dim', '#e8e8e8', 'not tested yet'),
}

MILESTONE_STATES = {
    'unlocked':    Look('✅', 'green', '#2e9e44', 'unlocked'),
    'regressed':   Look('⚠️', 'red', '#d1495b', 'regressed'),
    'ready':       Look('🔓', 'cyan', '#3c91e6', 'ready to unlock'),
    'in_progress': Look('🔄', 'yellow', '#f0a202', 'in progress'),
    'not_started': Look('⏳', 'dim', '#c8c8c8', 'not started'),
}

# module states that count against an unlocked milestone ('untested' is unknown, not broken)
BROKEN = frozenset({'fail', 'locked', 'edited', 'todo', 'absent'})
NEUTRAL = Look('•', 'dim', '#c8c8c8', 'unknown')


def module_look(state: str) -> Look:
    return MODULE_STATES.get(state, NEUTRAL)


def milestone_look(state: str) -> Look:
    return MILESTONE_STATES.get(state, NEUTRAL)
