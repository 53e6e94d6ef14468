"""`wstui track`: a training run's checkpoints as one series (issue 17).

`series` finds and orders the checkpoints, `run` plans and computes (here, or on a Ray
cluster through `ray_exec`), `document` writes `wstui.track/1` and the long CSV, and `work`
is the one module that calls the scan engine, the analyzers and the result cache.
"""

from __future__ import annotations

from typing import Any


def track(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See `wstui.track.run.track`."""
    from wstui.track.run import track as _track

    return _track(*args, **kwargs)
