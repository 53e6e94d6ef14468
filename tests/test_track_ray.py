"""`--cluster` on a real local Ray cluster (`ray start --head`, 2 CPUs, once for this module):
the same document as the local engine, a killed worker's task retried, finished tasks never
redone, `wstui scan --cluster`. Skipped when Ray is not installed (`pip install wstui[ray]`)."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'wstui[ray]'")

from wstui.demo_run import interpolated_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEPS = [0, 100, 300, 1000]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Any:
    """A head node of 2 CPUs in its own process group, stopped by signalling that group only
    (never `ray stop`: it would stop every Ray cluster on the machine)."""
    tmp = tmp_path_factory.mktemp("ray")
    port = _free_port()
    # a private test cluster: no token (one in ~/.ray from another cluster would not match)
    auth_before = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
         f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
         "--disable-usage-stats", f"--temp-dir={tmp}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
        ray.shutdown()
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        if auth_before is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth_before


@pytest.fixture(scope="module")
def demo_run(demo_paths, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    interpolated_run(demo_paths.base, demo_paths.finetuned, out, steps=STEPS)
    return out


@pytest.fixture(scope="module")
def local_doc(demo_run: Path, tmp_path_factory) -> dict[str, Any]:
    from wstui import jsonio
    from wstui.engine.track import track

    doc = track([demo_run], use_cache=False, workers=2)
    return jsonio.strict({k: v for k, v in doc.items() if k != "run"})


def _same(a: Any, b: Any, path: str = "") -> None:
    """Equal, floats within 1e-9 relative (BLAS thread counts may differ in the last bits)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), (path, a.keys() ^ b.keys())
        for k in a:
            _same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (path, a, b)
    else:
        assert a == b, (path, a, b)


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    e = {**os.environ, "WSTUI_CACHE_DIR": str(tmp / "cache"), "PYTHONPATH": str(ROOT), **extra}
    if "RAY_ADDRESS" not in extra:
        e.pop("RAY_ADDRESS", None)
    return e


def _wstui(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wstui", *args], capture_output=True,
                          text=True, env=env, timeout=180)


def test_cluster_document_equals_local_and_is_not_redone(cluster: str, demo_run: Path,
                                                         local_doc: dict, tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    r = _wstui(["track", str(demo_run), "--cluster", cluster, "--json", str(out), "--quiet"],
               _env(tmp_path))
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    run = doc.pop("run")
    assert run["executor"] == "ray" and run["tasks"] > 0
    _same(doc, local_doc)
    # RAY_ADDRESS in the environment does the same; everything is in the cache now
    r = _wstui(["track", str(demo_run), "--json", str(out), "--quiet"],
               _env(tmp_path, RAY_ADDRESS=cluster))
    assert r.returncode == 0, r.stderr
    again = json.loads(out.read_text())
    assert again.pop("run")["tasks"] == 0
    _same(again, local_doc)


def _die_once(marker: str, spec: dict) -> dict:
    """The first scan task kills its worker (SIGKILL: as a node lost mid-task)."""
    if spec["kind"] == "analyze" and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    from wstui.engine.track_work import run_task

    return run_task(spec)


def _fail_step(step: int, spec: dict) -> dict:
    """Scan tasks of one step fail: the run stops there, as if interrupted."""
    if spec["kind"] == "analyze" and spec.get("step") == step:
        raise RuntimeError("interrupted here")
    from wstui.engine.track_work import run_task

    return run_task(spec)


@pytest.fixture
def driver(cluster: str, tmp_path: Path, monkeypatch) -> str:
    """This process joined to the cluster, with the test's task wrappers shipped by value."""
    import functools  # noqa: F401

    monkeypatch.setenv("WSTUI_CACHE_DIR", str(tmp_path / "cache"))
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address=cluster, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    try:
        yield cluster
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_killed_worker_task_is_retried(driver: str, demo_run: Path, local_doc: dict,
                                       tmp_path: Path) -> None:
    import functools

    from wstui.engine.ray_exec import RayExecutor
    from wstui.engine.track import track

    marker = tmp_path / "killed"
    ex = RayExecutor(ray, driver, task=functools.partial(_die_once, str(marker)))
    doc = track([demo_run], executor=ex, use_cache=False)
    assert marker.exists(), "no worker was killed"
    killed = int(marker.read_text())
    run = doc.pop("run")
    from wstui import jsonio

    _same(jsonio.strict(doc), local_doc)
    assert run["tasks"] > 0 and killed > 0


def test_interrupted_run_resumes_without_redoing_finished_tasks(
        driver: str, demo_run: Path, local_doc: dict, tmp_path: Path) -> None:
    import functools

    from wstui import jsonio
    from wstui.engine.ray_exec import ClusterError, RayExecutor
    from wstui.engine.track import track

    broken = RayExecutor(ray, driver, task=functools.partial(_fail_step, 3))
    with pytest.raises(ClusterError, match="interrupted here") as exc:
        track([demo_run], executor=broken)
    assert "\n" not in str(exc.value) and "checkpoint-1000" in str(exc.value)
    full = RayExecutor(ray, driver)
    doc = track([demo_run], executor=full)
    run = doc.pop("run")
    assert run["chains_computed"] == 0  # every change chain landed before the failure
    assert run["tasks"] >= 1 and run["scans_cached"] > 0
    # only step 3's scans were left; the others' are never submitted again
    n_left = sum(1 for t in doc["tensors"] if t["analyzed"][3])
    assert run["scans_cached"] == doc["counts"]["analyzed"] - n_left
    _same(jsonio.strict(doc), local_doc)


def test_scan_cluster_matches_local_scan(cluster: str, demo_paths, tmp_path: Path) -> None:
    t0 = time.perf_counter()
    out_c, out_l = tmp_path / "c.json", tmp_path / "l.json"
    env = _env(tmp_path)
    r = _wstui(["scan", str(demo_paths.base), "--cluster", cluster, "--json", str(out_c),
                "--methods", "stats,spectral"], env)
    assert r.returncode == 0, r.stderr
    assert "Top issues" in r.stdout or "No findings" in r.stdout or r.stdout
    r = _wstui(["scan", str(demo_paths.base), "--json", str(out_l), "--methods",
                "stats,spectral", "--no-cache", "--quiet"], env)
    assert r.returncode == 0, r.stderr
    c, loc = json.loads(out_c.read_text()), json.loads(out_l.read_text())
    for doc in (c, loc):
        for k in ("elapsed_s", "wstui_version"):
            doc.pop(k, None)
        for t in doc["tensors"]:
            t.pop("timings", None)
    _same(c["tensors"], loc["tensors"])
    _same(c["top_issues"], loc["top_issues"])
    # the cluster's results are in the local cache: a local scan finds them all
    r = _wstui(["scan", str(demo_paths.base), "--methods", "stats,spectral",
                "--json", str(out_l)], env)
    assert r.returncode == 0
    n = len(c["tensors"])
    assert f"{n} from cache" in r.stdout, r.stdout[:2000]
    assert time.perf_counter() - t0 < 120
