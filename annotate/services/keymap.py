"""Keyboard keys of a project's classes: they follow the class names and never move by themselves.

Rules (issue 9), in this order:

1. a class whose name is one digit or one letter gets that key (``0``-``9``, ``a``-``z``; letters
   case-insensitive), so in a project with classes ``0 1 2 3 4`` the key ``3`` labels "3";
2. every other class gets the first free key of ``1 2 3 4 5 6 7 8 9 0 a b ... z``, in class order;
3. beyond those 36 keys a class has no key (the page's type-ahead and candidate list reach it).

The map is stored on the project (``Project.hotkeys``) and only *completed* afterwards: a class
added later gets a free key, a kept class keeps its key, so the muscle memory of a team holds.
Starting over is the explicit admin action "Reassign keyboard keys" (:func:`keymap_reset`).

Keys the labeling page uses for itself are not letters or digits (Space, Backspace, Enter, ``/``,
``?``, ``+``, ``-``), so a project with 26 one-letter classes gets every letter.
"""
from __future__ import annotations

from ..models import Project

#: the order in which free keys are handed out
KEY_ORDER = tuple("1234567890abcdefghijklmnopqrstuvwxyz")
_KEYS = frozenset(KEY_ORDER)


def _own_key(name: str) -> str | None:
    name = name.strip().lower()
    return name if len(name) == 1 and name in _KEYS else None


def keymap_complete(classes: list[str], current: dict[str, str] | None = None) -> dict[str, str]:
    """The key map for ``classes``: ``current``'s keys kept (for classes still present), the rest assigned
    by the module's rules.  Pure function; returns {class: key} for the classes that get a key."""
    kept = {c: k for c, k in (current or {}).items() if c in classes and k in _KEYS}
    # A stored map may have lost a class and then regained another with the same key: keep the first.
    out: dict[str, str] = {}
    for c in classes:
        if c in kept and kept[c] not in out.values():
            out[c] = kept[c]
    used = set(out.values())
    rest = [c for c in classes if c not in out]
    for c in rest:  # rule 1: a one-character name takes its own key when it is free
        k = _own_key(c)
        if k is not None and k not in used:
            out[c] = k
            used.add(k)
    free = (k for k in KEY_ORDER if k not in used and not any(_own_key(c) == k for c in rest if c not in out))
    for c in rest:  # rule 2: the next free key, skipping keys that another class's name asks for
        if c in out:
            continue
        k = next(free, None)
        if k is None:
            break  # rule 3: no keys left
        out[c] = k
    return {c: out[c] for c in classes if c in out}


def keymap_sync(*, project: Project) -> dict[str, str]:
    """Complete the project's stored key map for its classes (a no-op write when nothing changed)."""
    keys = keymap_complete(list(project.classes or []), project.hotkeys or {})
    if keys != (project.hotkeys or {}):
        project.hotkeys = keys
        Project.objects.filter(pk=project.pk).update(hotkeys=keys)
    return keys


def keymap_reset(*, project: Project) -> dict[str, str]:
    """Explicit admin action: assign every key again from the class names (forgets the stored map)."""
    project.hotkeys = keymap_complete(list(project.classes or []), {})
    Project.objects.filter(pk=project.pk).update(hotkeys=project.hotkeys)
    return project.hotkeys


def keyed_classes(*, project: Project) -> list[tuple[str, str | None]]:
    """(class, key or None) in class order, with the map completed first."""
    keys = keymap_sync(project=project)
    return [(c, keys.get(c)) for c in project.classes or []]
