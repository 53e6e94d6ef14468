"""Fetching `org/name` from the Hub: the real huggingface_hub code against a fake Hub.

A threaded HTTP server on 127.0.0.1 answers the two endpoints huggingface_hub 2.x calls for
what wstui fetches: the model info (`/api/models/{repo}/revision/{rev}?blobs=true`, with the
siblings) and the file resolve endpoint (`/{repo}/resolve/{commit}/{file}`, HEAD and GET, with
ETag / X-Repo-Commit / Content-Length, Range requests for resume). The CLI runs as a subprocess
with HF_ENDPOINT pointing at the server and the HF cache in tmp_path, because huggingface_hub
reads its settings at import. Nothing else is ever contacted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save as st_save

from wstui.checkpoint.base import CheckpointError
from wstui.checkpoint.hub import _expected_parts, choose_files

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class FakeHub:
    """Repos as {repo_id: {filename: bytes}}; records every request; injects faults."""

    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refuse: dict[str, int] = field(default_factory=dict)  # repo_id -> HTTP status (401, 403)
    gated: set[str] = field(default_factory=set)  # info is public, files answer 403 GatedRepo
    drop_once: dict[str, int] = field(default_factory=dict)  # name -> bytes sent, then close
    fail_once: set[str] = field(default_factory=set)  # HTTP 500 on the first GET
    stall: set[str] = field(default_factory=set)  # GET waits for `release` before answering
    release: threading.Event = field(default_factory=threading.Event)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""

    @staticmethod
    def commit(repo_id: str) -> str:
        return hashlib.sha1(repo_id.encode()).hexdigest()

    def gets(self, filename: str) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET" and r[1].endswith("/" + filename)]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _repo(self, parts: list[str]) -> str | None:
            repo_id = "/".join(parts[:2])
            if repo_id in hub.refuse:
                self._send(hub.refuse[repo_id], b'{"error": "auth"}')
                return None
            if repo_id not in hub.repos:
                self._send(404, b'{"error": "Repository not found"}',
                           {"X-Error-Code": "RepoNotFound"})
                return None
            return repo_id

        def _serve(self) -> None:
            path = self.path.split("?")[0]
            hub.requests.append((self.command, path, self.headers.get("Range")))
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "revision":
                repo_id = self._repo(parts[2:4])
                if repo_id is None:
                    return
                if parts[5] not in ("main", hub.commit(repo_id)):
                    self._send(404, b"", {"X-Error-Code": "RevisionNotFound"})
                    return
                files = hub.repos[repo_id]
                info = {"id": repo_id, "sha": hub.commit(repo_id),
                        "siblings": [{"rfilename": n, "size": len(b)} for n, b in files.items()]}
                self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})
                return
            if len(parts) >= 5 and parts[2] == "resolve":
                repo_id = self._repo(parts[:2])
                if repo_id is None:
                    return
                name = "/".join(parts[4:])
                if repo_id in hub.gated:
                    self._send(403, b"", {"X-Error-Code": "GatedRepo"})
                    return
                body = hub.repos[repo_id].get(name)
                commit = {"X-Repo-Commit": hub.commit(repo_id)}
                if body is None:
                    self._send(404, b"", {**commit, "X-Error-Code": "EntryNotFound"})
                    return
                headers = {**commit, "ETag": f'"{hashlib.sha256(body).hexdigest()}"'}
                if self.command == "GET" and name in hub.stall:
                    hub.release.wait(30)
                if self.command == "GET" and name in hub.fail_once:
                    hub.fail_once.discard(name)
                    self._send(500, b"boom")
                    return
                start = 0
                if self.command == "GET" and (rng := self.headers.get("Range")):
                    start = int(rng.split("=")[1].split("-")[0])
                    headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
                if self.command == "GET" and name in hub.drop_once:
                    cut = hub.drop_once.pop(name)
                    self.send_response(200)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self._send(206 if start else 200, body[start:], headers)
                return
            self._send(404, b"")

        do_GET = do_HEAD = _serve

    return Handler


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    fake = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.release.set()
    server.shutdown()
    server.server_close()


def _safetensors(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return st_save({
        "model.embed_tokens.weight": rng.standard_normal((32, 16), dtype=np.float32),
        "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((16, 16), dtype=np.float32),
    })


def _gguf(tmp: Path, name: str) -> bytes:
    gguf = pytest.importorskip("gguf")
    path = tmp / name
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_tensor("blk.0.ffn_up.weight", np.ones((8, 16), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


CONFIG = json.dumps({"model_type": "llama", "num_hidden_layers": 1}).encode()


def _env(tmp_path: Path, hub: FakeHub, offline: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(("HF_", "HUGGING", "TRANSFORMERS_OFFLINE", "HTTP_PROXY",
                                        "HTTPS_PROXY", "ALL_PROXY"))}
    env.update({
        "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hfhome"),
        "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_XET": "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1",
        "PYTHONPATH": str(ROOT), "COLUMNS": "200",
    })
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def _wstui(tmp_path: Path, hub: FakeHub, *args: str, offline: bool = False,
           code: str | None = None) -> subprocess.CompletedProcess:
    env = _env(tmp_path, hub, offline)
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "wstui", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


def _one_line(run: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    return lines[0]


def test_download_lands_in_cache_then_opens_without_requests(tmp_path: Path, hub: FakeHub
                                                              ) -> None:
    weights = _safetensors()
    hub.repos["org/tiny"] = {
        "config.json": CONFIG, "model.safetensors": weights, "tokenizer.json": b"{}",
        "README.md": b"# tiny", "pytorch_model.bin": b"not fetched", "onnx/model.onnx": b"x",
    }
    run = _wstui(tmp_path, hub, "ls", "org/tiny")
    assert run.returncode == 0, run.stderr
    assert "attn_q" in run.stdout and "embedding" in run.stdout
    assert "fetching org/tiny@" in run.stderr and "fetched" in run.stderr
    repo = tmp_path / "hub" / "models--org--tiny"
    commit = hub.commit("org/tiny")
    assert (repo / "refs" / "main").read_text() == commit
    snap = repo / "snapshots" / commit
    assert sorted(p.name for p in snap.iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json"]
    assert (snap / "model.safetensors").is_symlink()
    assert (snap / "model.safetensors").read_bytes() == weights
    assert (repo / "blobs" / hashlib.sha256(weights).hexdigest()).is_file()
    assert not hub.gets("pytorch_model.bin") and not hub.gets("README.md")

    # The second open: no request at all, and neither huggingface_hub nor torch imported.
    before = len(hub.requests)
    driver = (
        "import sys\nfrom wstui.cli import main\nrc = main(sys.argv[1:])\n"
        "bad = [m for m in ('huggingface_hub', 'torch') if m in sys.modules]\n"
        "sys.exit(f'rc={rc} imported {bad}' if rc or bad else 0)\n"
    )
    again = _wstui(tmp_path, hub, "ls", "org/tiny", code=driver)
    assert again.returncode == 0, again.stderr
    assert "attn_q" in again.stdout and "fetch" not in again.stderr
    assert len(hub.requests) == before
    offline = _wstui(tmp_path, hub, "ls", f"org/tiny@{commit}", offline=True)
    assert offline.returncode == 0, offline.stderr
    assert len(hub.requests) == before


def test_dropped_connection_resumes_with_range(tmp_path: Path, hub: FakeHub) -> None:
    # huggingface_hub writes in 10 MiB chunks: what it resumes from is the last whole chunk
    chunk = 10 * 1024 * 1024
    weights = st_save({"model.embed_tokens.weight": np.arange(3 << 20, dtype=np.float32)
                       .reshape(3 << 10, 1 << 10)})
    hub.repos["org/flaky"] = {"config.json": CONFIG, "model.safetensors": weights}
    hub.drop_once["model.safetensors"] = chunk + (1 << 20)
    run = _wstui(tmp_path, hub, "ls", "org/flaky")
    assert run.returncode == 0, run.stderr
    gets = hub.gets("model.safetensors")
    assert len(gets) == 2 and gets[0][2] is None
    assert gets[1][2] == f"bytes={chunk}-"
    snap = tmp_path / "hub" / "models--org--flaky" / "snapshots" / hub.commit("org/flaky")
    assert (snap / "model.safetensors").read_bytes() == weights


def test_interrupted_fetch_keeps_finished_files(tmp_path: Path, hub: FakeHub) -> None:
    index = {"metadata": {}, "weight_map": {
        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "model.layers.0.self_attn.q_proj.weight": "model-00002-of-00002.safetensors"}}
    hub.repos["org/sharded"] = {
        "config.json": CONFIG, "model.safetensors.index.json": json.dumps(index).encode(),
        "model-00001-of-00002.safetensors": st_save(
            {"model.embed_tokens.weight": np.ones((4, 4), np.float32)}),
        "model-00002-of-00002.safetensors": st_save(
            {"model.layers.0.self_attn.q_proj.weight": np.ones((4, 4), np.float32)}),
    }
    hub.fail_once.add("model-00002-of-00002.safetensors")
    first = _wstui(tmp_path, hub, "ls", "org/sharded")
    assert first.returncode == 2
    assert "HTTP 500" in first.stderr.splitlines()[-1] and "Traceback" not in first.stderr
    second = _wstui(tmp_path, hub, "ls", "org/sharded")
    assert second.returncode == 0, second.stderr
    assert "1 of 4 files" in second.stderr
    assert len(hub.gets("model-00001-of-00002.safetensors")) == 1  # kept, not fetched again
    assert len(hub.gets("model-00002-of-00002.safetensors")) == 2


def test_ctrl_c_keeps_finished_files(tmp_path: Path, hub: FakeHub) -> None:
    hub.repos["org/slow"] = {"config.json": CONFIG, "tokenizer.json": b"{}",
                             "model.safetensors": _safetensors(4)}
    hub.stall.add("model.safetensors")
    proc = subprocess.Popen([sys.executable, "-m", "wstui", "pull", "org/slow"],
                            env=_env(tmp_path, hub), cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not hub.gets("model.safetensors") and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == "wstui: interrupted" and "Traceback" not in err
    hub.stall.clear()
    hub.release.set()
    again = _wstui(tmp_path, hub, "ls", "org/slow")
    assert again.returncode == 0, again.stderr
    assert "1 of 3 files" in again.stderr
    assert len(hub.gets("config.json")) == 1 and len(hub.gets("tokenizer.json")) == 1


def test_bin_only_repo_needs_allow_bin(tmp_path: Path, hub: FakeHub) -> None:
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"model.layers.0.mlp.up_proj.weight": torch.ones(8, 4)}, buf)
    hub.repos["org/old"] = {"config.json": CONFIG, "pytorch_model.bin": buf.getvalue(),
                            "training_args.bin": b"pickle"}
    refused = _wstui(tmp_path, hub, "ls", "org/old")
    assert refused.returncode == 2
    line = _one_line(refused)
    assert "pytorch_model.bin" in line and "--allow-bin" in line
    assert not hub.gets("pytorch_model.bin")
    ok = _wstui(tmp_path, hub, "ls", "org/old", "--allow-bin")
    assert ok.returncode == 0, ok.stderr
    assert "mlp_up" in ok.stdout
    assert not hub.gets("training_args.bin")


def test_gguf_repo_with_several_files(tmp_path: Path, hub: FakeHub) -> None:
    hub.repos["org/quants"] = {
        "README.md": b"#", "tiny-Q8_0.gguf": _gguf(tmp_path, "a.gguf"),
        "tiny-F32.gguf": _gguf(tmp_path, "b.gguf"),
    }
    several = _wstui(tmp_path, hub, "ls", "org/quants")
    assert several.returncode == 2
    line = _one_line(several)
    assert "tiny-F32.gguf" in line and "tiny-Q8_0.gguf" in line and "--file" in line
    pulled = _wstui(tmp_path, hub, "pull", "org/quants", "--file", "tiny-F32.gguf")
    assert pulled.returncode == 0, pulled.stderr
    local = Path(pulled.stdout.strip())
    assert local.name == "tiny-F32.gguf" and local.is_file()
    assert not hub.gets("tiny-Q8_0.gguf")
    before = len(hub.requests)
    opened = _wstui(tmp_path, hub, "ls", "org/quants", "--file", "tiny-F32.gguf")
    assert opened.returncode == 0, opened.stderr
    assert "mlp_up" in opened.stdout
    assert len(hub.requests) == before


@pytest.mark.parametrize(("status", "words"), [
    (404, ["no such repo", "404"]),
    (401, ["HF_TOKEN", "hf auth login", "401"]),
    (403, ["HF_TOKEN", "403"]),
])
def test_hub_errors_are_one_line(tmp_path: Path, hub: FakeHub, status: int,
                                 words: list[str]) -> None:
    if status != 404:
        hub.refuse["org/private"] = status
    run = _wstui(tmp_path, hub, "scan", "org/private")
    assert run.returncode == 2
    line = _one_line(run)
    assert line.startswith("wstui: org/private")
    for word in words:
        assert word in line


def test_unknown_revision_is_one_line(tmp_path: Path, hub: FakeHub) -> None:
    hub.repos["org/tiny"] = {"config.json": CONFIG, "model.safetensors": _safetensors()}
    run = _wstui(tmp_path, hub, "ls", "org/tiny@v9")
    assert run.returncode == 2
    line = _one_line(run)
    assert "no revision v9" in line


def test_gated_repo_names_the_token(tmp_path: Path, hub: FakeHub) -> None:
    hub.repos["org/gated"] = {"config.json": CONFIG, "model.safetensors": _safetensors()}
    hub.gated.add("org/gated")
    run = _wstui(tmp_path, hub, "ls", "org/gated")
    assert run.returncode == 2
    line = run.stderr.splitlines()[-1]
    assert "gated" in line and "HF_TOKEN" in line and "hf auth login" in line
    assert "Traceback" not in run.stderr


def test_offline_is_one_line_and_asks_nothing(tmp_path: Path, hub: FakeHub) -> None:
    hub.repos["org/tiny"] = {"config.json": CONFIG, "model.safetensors": _safetensors()}
    run = _wstui(tmp_path, hub, "ls", "org/tiny", offline=True)
    assert run.returncode == 2
    line = _one_line(run)
    assert "not in the local Hugging Face cache" in line and "offline" in line
    assert hub.requests == []


def test_unreachable_hub_is_offline(tmp_path: Path, hub: FakeHub) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        hub.url = f"http://127.0.0.1:{s.getsockname()[1]}"
    run = _wstui(tmp_path, hub, "quant", "org/tiny")
    assert run.returncode == 2
    line = _one_line(run)
    assert "unreachable" in line and "offline" in line


def test_repo_without_weights_lists_what_it_holds(tmp_path: Path, hub: FakeHub) -> None:
    hub.repos["org/docs"] = {"README.md": b"#", "config.json": CONFIG, "onnx/model.onnx": b"x"}
    run = _wstui(tmp_path, hub, "ls", "org/docs")
    assert run.returncode == 2
    line = _one_line(run)
    assert "no weights" in line and "README.md" in line and "onnx/model.onnx" in line


def test_choose_files() -> None:
    names = ["config.json", "tokenizer.json", "README.md", "model-00001-of-00002.safetensors",
             "model-00002-of-00002.safetensors", "model.safetensors.index.json",
             "consolidated.safetensors", "pytorch_model.bin", "onnx/model.safetensors"]
    files, target = choose_files("o/r", names)
    assert target is None
    assert files == ["config.json", "tokenizer.json", "model.safetensors.index.json",
                     "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    split = ["m-Q4_K-00001-of-00002.gguf", "m-Q4_K-00002-of-00002.gguf", "m-Q8_0.gguf"]
    with pytest.raises(CheckpointError, match=r"2 GGUF files.*m-Q4_K-00001-of-00002\.gguf"):
        choose_files("o/r", split)
    assert choose_files("o/r", split, file="m-Q4_K-00001-of-00002.gguf") == (
        split[:2], split[0])
    assert _expected_parts("q/m-00002-of-00003.gguf") == [
        "q/m-00001-of-00003.gguf", "q/m-00002-of-00003.gguf", "q/m-00003-of-00003.gguf"]
    assert _expected_parts("m.gguf") == ["m.gguf"]
    with pytest.raises(CheckpointError, match=r"has no file nope\.gguf"):
        choose_files("o/r", split, file="nope.gguf")
    with pytest.raises(CheckpointError, match="--allow-bin"):
        choose_files("o/r", ["pytorch_model.bin"], file="pytorch_model.bin")


def test_repo_id_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wstui.checkpoint.resolve import fetchable_repo_id, split_revision

    monkeypatch.chdir(tmp_path)
    assert split_revision("org/name@v1.0") == ("org/name", "v1.0")
    assert split_revision("org/name") == ("org/name", None)
    assert fetchable_repo_id("org/name") and fetchable_repo_id("org/name@refs/pr/1")
    assert not fetchable_repo_id("gpt2")  # bare ids: cache only, never fetched
    assert not fetchable_repo_id("org/model.safetensors")
    assert not fetchable_repo_id("./org/name") and not fetchable_repo_id("org/name@..")
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert not fetchable_repo_id("org/name")  # a local folder wins


def test_local_path_never_loads_the_hub_code(tmp_path: Path, hub: FakeHub) -> None:
    (tmp_path / "org" / "tiny").mkdir(parents=True)
    (tmp_path / "org" / "tiny" / "model.safetensors").write_bytes(_safetensors())
    driver = (
        "import sys\nfrom wstui.cli import main\nrc = main(sys.argv[1:])\n"
        "bad = [m for m in ('wstui.checkpoint.hub', 'huggingface_hub') if m in sys.modules]\n"
        "sys.exit(f'rc={rc} imported {bad}' if rc or bad else 0)\n"
    )
    run = _wstui(tmp_path, hub, "ls", "org/tiny", code=driver)  # a folder here, not the Hub
    assert run.returncode == 0, run.stderr
    assert hub.requests == []


def test_scope_fetches_a_repo_that_is_not_cached(tmp_path: Path, hub: FakeHub) -> None:
    """The Python API opens `org/name` as the CLI does: fetched once, then from the cache."""
    hub.repos["org/api"] = {"config.json": CONFIG, "model.safetensors": _safetensors()}
    driver = (
        "import sys\nfrom wstui import Scope\n"
        "s = Scope(sys.argv[1])\nprint(len(s.tensors), s.checkpoint.format)\n"
    )
    run = _wstui(tmp_path, hub, "org/api", code=driver)
    assert run.returncode == 0, run.stderr
    n, fmt = run.stdout.split()
    assert int(n) > 0 and fmt == "safetensors"
    assert hub.gets("model.safetensors")
    before = len(hub.requests)
    again = _wstui(tmp_path, hub, "org/api", code=driver)
    assert again.returncode == 0 and again.stdout == run.stdout
    assert len(hub.requests) == before


_APP_DRIVER = r"""
import asyncio, io, json, sys
from wstui.app.fetch import FetchApp
from wstui.checkpoint.hub import download

titles = []

def fetch(text, on_progress):
    return download(text, stream=io.StringIO(), on_progress=on_progress)

async def main():
    app = FetchApp(sys.argv[1:], fetch)
    async with app.run_test(size=(100, 20)) as pilot:
        while app.is_running:
            titles.append(app.sub_title)
            await pilot.pause(0.01)
    print(json.dumps({"targets": app.targets, "error": str(app.error) if app.error else None,
                      "titles": titles}))

asyncio.run(main())
"""


def test_app_fetches_with_the_progress_in_its_header(tmp_path: Path, hub: FakeHub) -> None:
    """`wstui org/name` on a terminal: the fetch runs in a small app whose header carries the
    bytes, rate and ETA; it ends with what to open, or with the one-line error."""
    weights = st_save({"model.embed_tokens.weight": np.zeros((1 << 10, 1 << 10), np.float32)})
    hub.repos["org/big"] = {"config.json": CONFIG, "model.safetensors": weights}
    run = _wstui(tmp_path, hub, "org/big", code=_APP_DRIVER)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["error"] is None and out["targets"] == ["org/big"]  # now opened from the cache
    assert (tmp_path / "hub" / "models--org--big" / "snapshots" / hub.commit("org/big")
            / "model.safetensors").read_bytes() == weights
    titles = " ".join(out["titles"])
    assert "fetching org/big" in titles and "4.2 MB" in titles and "/s" in titles, titles
    assert "org/big" not in run.stderr  # nothing written under the app
    missing = _wstui(tmp_path, hub, "org/nope", code=_APP_DRIVER)
    out = json.loads(missing.stdout.strip().splitlines()[-1])
    assert out["targets"] == [] and "org/nope" in out["error"]


def test_fetch_progress_line() -> None:
    from wstui.app.fetch import progress_line

    assert progress_line(1_500_000, 3_000_000, 500_000) == "1.5 MB / 3.0 MB  500.0 KB/s  ETA 3 s"
    assert progress_line(0, 0, 0).endswith("ETA ?")
