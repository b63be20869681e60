"""Test splits that record every read, to show a training function looks at them only at the end.

A training function that picks its best epoch (or anything else) on the test split has to read
that split before its final evaluation. `RecordingList` notes each read of its items together
with the state of a `Gate`, which the test opens when the final evaluation starts.
"""

from __future__ import annotations

import functools


class Gate:
    """Closed until the test's final-evaluation hook opens it."""

    def __init__(self):
        self.opened = False
        self.calls = 0

    def open_on_call(self, monkeypatch, target, name: str) -> None:
        """Replaces ``target.name`` by a wrapper that opens the gate, then calls it."""
        original = getattr(target, name)

        @functools.wraps(original)
        def opening(*args, **kwargs):
            self.opened = True
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(target, name, opening)

    def open_after_call(self, monkeypatch, target, name: str) -> None:
        """Replaces ``target.name`` by a wrapper that calls it, then opens the gate."""
        original = getattr(target, name)

        @functools.wraps(original)
        def opening(*args, **kwargs):
            result = original(*args, **kwargs)
            self.opened = True
            self.calls += 1
            return result

        monkeypatch.setattr(target, name, opening)


class RecordingList(list):
    """A list that records, for every read of its items, whether the gate was open.

    Sizes (``len``, truth value) are not reads: checking a split is non-empty is allowed.
    """

    def __init__(self, items, gate: Gate):
        super().__init__(items)
        self.gate = gate
        self.reads: list[tuple[str, bool]] = []

    def _read(self, how: str) -> None:
        self.reads.append((how, self.gate.opened))

    def early_reads(self) -> list[str]:
        """How the items were read before the gate opened (empty when they never were)."""
        return [how for how, opened in self.reads if not opened]

    def __iter__(self):
        self._read("iter")
        return super().__iter__()

    def __reversed__(self):
        self._read("reversed")
        return super().__reversed__()

    def __getitem__(self, index):
        self._read("getitem")
        return super().__getitem__(index)

    def __contains__(self, item):
        self._read("contains")
        return super().__contains__(item)

    def __add__(self, other):
        self._read("add")
        return super().__add__(other)

    def __radd__(self, other):
        self._read("add")
        return list(other) + list(super().__iter__())

    def copy(self):
        self._read("copy")
        return super().copy()

    def index(self, *args):
        self._read("index")
        return super().index(*args)

    def count(self, item):
        self._read("count")
        return super().count(item)
