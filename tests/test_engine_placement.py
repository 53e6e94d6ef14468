"""The engine's view of torch while another thread is still importing it."""

from __future__ import annotations

import sys
import types
from importlib.machinery import ModuleSpec

from wstui.engine import placement


def test_a_torch_still_importing_counts_as_not_loaded(monkeypatch) -> None:
    """A diff imports torch on one worker (for compare) while the others already see it in
    sys.modules, half built and without get_num_threads: a worker that called it died, and
    the diff waited for that worker for ever (seen in CI as a 300 s timeout)."""
    half = types.ModuleType("torch")
    half.__spec__ = ModuleSpec("torch", None)
    half.__spec__._initializing = True
    monkeypatch.setitem(sys.modules, "torch", half)
    assert placement.loaded_torch() is None
    placement.set_threads(1)  # nothing to set yet: no AttributeError
    placement.empty_cache()
    half.__spec__._initializing = False
    half.get_num_threads = lambda: 2
    calls = []
    half.set_num_threads = calls.append
    assert placement.loaded_torch() is half
    placement.set_threads(1)
    assert calls == [1]
