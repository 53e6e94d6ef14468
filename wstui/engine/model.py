"""Model-scope tasks: an analysis that needs the whole model at once (a forward pass), held on
one worker of the pool.

A model task takes every slot of the pool, so it runs alone: the model is the one resident
thing, and torch gets every core. It reports what it is doing through the pool's one progress
type (`Progress.current`, phase "model") and checks for a cancel at each step: `step()` raises
`Cancelled` once the job is cancelled, so a model task stops at its next step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wstui.engine.pool import Pool, Task

#: a model task's cost in the ETA's units: one heavy unit as large as a big spectrum (the
#: ETA has nothing better to go on before the first step lands)
MODEL_COST = 1e12


class Cancelled(Exception):
    """Raised by `ModelContext.step` once the job is cancelled."""


class ModelContext:
    """What a model task's function gets: the pool (its device, workers) and `step`."""

    def __init__(self, pool: Pool, task: Task) -> None:
        self.pool = pool
        self.task = task

    @property
    def device(self) -> str:
        return self.pool.device

    @property
    def cancelled(self) -> bool:
        return self.pool.cancelled

    def step(self, message: str) -> None:
        """Say what comes next (progress `current`); raise `Cancelled` when cancelled."""
        if self.pool.cancelled:
            raise Cancelled(message)
        self.pool._set_step(message)


def add_model_task(
    pool: Pool, fn: Callable[[ModelContext], Any], *, label: str,
    on_error: Callable[[BaseException], None], unit: str = "(model)",
) -> Task:
    """Queue `fn` as a model-scope task at the front of `pool` (call under the pool's lock,
    from its `_plan`). `fn`'s exceptions other than `Cancelled` go to `on_error`, on the
    worker thread; the caller re-raises them where it waits."""

    def run(task: Task) -> None:
        try:
            fn(ModelContext(pool, task))
        except Cancelled:
            pass
        except BaseException as exc:  # handed back to the waiting caller
            on_error(exc)

    return pool._add_task_locked(unit, run, label=label, phase="model", kind="heavy",
                                 cost=MODEL_COST, slots=pool.workers, prio=(0, 0, 0))
