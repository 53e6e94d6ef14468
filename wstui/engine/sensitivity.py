"""The sensitivity study (`wstui sensitivity`, `Scope.sensitivity`) as a model-scope task on
the pool: one function builds the `wstui.sensitivity/1` document, so the CLI and the API give
the same numbers.

Steps, in one model task (the whole model on one worker, every core, progress and cancel
through the pool): build the causal LM from our readers; tokenize the calibration text; one
forward and backward with hooks (gradients reduced as they land, Linear input norms for wanda,
MLP down-projection spikes, residual-stream extremes); optional Hutchinson probes; the two text
halves for stability; super weights; the perturbation table with its controls. Then, on the
same pool once the model is gone, the static metrics of the same matrices as tensor tasks of
a scan (cached like any scan); `wstui.documents.sensitivity` assembles the document.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from analyzers import sensitivity as S
from wstui.checkpoint.base import Checkpoint, CheckpointError, TensorRef
from wstui.documents.sensitivity import SCHEMA, build_document, csv_rows, massive
from wstui.engine.model import Cancelled, ModelContext, add_model_task
from wstui.engine.progress import Progress
from wstui.engine.scan import ScanEngine

CONTROLS = ("random_k", "bottom_k")
#: module names (suffixes) of MLP down-projections across families (HF llama/mistral/qwen/gemma
#: `mlp.down_proj`, phi `mlp.fc2`, GPT-2 `mlp.c_proj`, GPT-NeoX `mlp.dense_4h_to_h`)
DOWN_PROJ_SUFFIXES = ("mlp.down_proj", "mlp.fc2", "mlp.c_proj", "mlp.dense_4h_to_h")
#: the static metrics' scan: spectra and the per-tensor sym int8 row
STATIC_METHODS = ("spectral", "quantization")
STATIC_OPTIONS = {"quant_bits": "8", "quant_schemes": "tensor:sym"}

Say = Callable[[str], None]



def check_options(*, metrics: Sequence[str], mode: str, perturb: Sequence[str],
                  controls: Sequence[str], seeds: Sequence[int], topk: int, probes: int,
                  tokens: int, scale: float) -> None:
    """ValueError (one line) for a setting that makes no sense, before anything slow."""
    bad = [m for m in metrics if m not in S.METRICS]
    if bad or not metrics:
        raise ValueError(f"--metrics: unknown {', '.join(bad) or '(none given)'} "
                         f"(choose from {', '.join(S.METRICS)})")
    if mode not in S.MODES:
        raise ValueError(f"--mode: {mode!r} is not one of {', '.join(S.MODES)}")
    bad = [m for m in perturb if m not in S.METHODS]
    if bad:
        raise ValueError(f"--perturb: unknown {', '.join(bad)} (choose from "
                         f"{', '.join(S.METHODS)})")
    bad = [c for c in controls if c not in CONTROLS]
    if bad:
        raise ValueError(f"--controls: unknown {', '.join(bad)} (choose from "
                         f"{', '.join(CONTROLS)})")
    if not seeds:
        raise ValueError("--seeds: give at least one seed")
    if topk < 1:
        raise ValueError(f"--topk must be at least 1, got {topk}")
    if probes < 1:
        raise ValueError(f"--probes must be at least 1, got {probes}")
    if tokens < 4:
        raise ValueError(f"--tokens must be at least 4, got {tokens}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"--scale must be a positive number, got {scale}")


def _ratio(a: float, b: float) -> float | None:
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return None
    return a / b


def _rowcol(flat: int, shape: Sequence[int]) -> tuple[int, int | None]:
    if len(shape) >= 2:
        cols = 1
        for s in shape[1:]:
            cols *= int(s)
        return flat // cols, flat % cols
    return flat, None


class _Study:
    """The state of one run: the model, its parameters by name and the tensors they map to."""

    def __init__(self, ckpt: Checkpoint, lm: Any, device: str, k: int) -> None:
        import torch

        from wstui.lm.loss import chunked_loss_fn, forward_fn

        self.ckpt, self.lm, self.k = ckpt, lm, k
        self.model = lm.model
        self.fwd = forward_fn(self.model)  # what the analyzers call: logits of ids
        self.loss = chunked_loss_fn(self.model)  # None: the plain loss on full logits
        base = getattr(self.model, "base_model", None)
        # the super-weight search needs the blocks only: skip the LM head when we can
        self.blocks_fwd = forward_fn(base) if base is not None and base is not self.model \
            else self.fwd
        self.device = device
        self.params: dict[str, torch.nn.Parameter] = dict(self.model.named_parameters())
        canon = {id(p): n for n, p in self.params.items()}
        self.linears = {}
        self.downs: list[tuple[str, Any, torch.Tensor]] = []
        for mname, mod in self.model.named_modules():
            w = getattr(mod, "weight", None)
            if isinstance(mod, torch.nn.Linear) and w is not None and id(w) in canon:
                self.linears[canon[id(w)]] = mod
                if mname.endswith(DOWN_PROJ_SUFFIXES):
                    self.downs.append((canon[id(w)], mod, w))
        n_layers = getattr(lm.config, "num_hidden_layers", None)
        self.layers = next((list(m) for m in self.model.modules()
                            if isinstance(m, torch.nn.ModuleList) and len(m) == n_layers), [])
        self.splits = {}
        for key, p in self.params.items():
            ref = lm.refs.get(key)
            kind = ref.kind if ref is not None else "other"
            self.splits[key] = S.head_split(kind, tuple(p.shape), lm.num_heads,
                                            lm.num_kv_heads, lm.head_dim)

    def ref_info(self, key: str) -> dict[str, Any]:
        ref = self.lm.refs.get(key)
        p = self.params[key]
        return {"name": ref.name if ref else key, "hf_name": (ref.hf_name if ref else None) or key,
                "kind": ref.kind if ref else "other", "block": ref.block if ref else None,
                "shape": list(p.shape), "numel": int(p.numel())}

    def tensor_name(self, key: str) -> str:
        ref = self.lm.refs.get(key)
        return (ref.hf_name or ref.name) if ref else key

    def weight_rows(self, picks: Sequence[S.Pick]) -> list[dict[str, Any]]:
        rows = []
        for p in picks:
            w = self.params[p.key]
            r, c = _rowcol(p.idx, tuple(w.shape))
            rows.append({"tensor": self.tensor_name(p.key), "row": r, "col": c,
                         "value": float(w.detach().reshape(-1)[p.idx]), "score": p.score})
        return rows

    def ppl(self, ids: Any) -> float:
        return S.perplexity(self.fwd, ids)

    def gradients(self, ids: Any, metrics: Sequence[str], k: int,
                  splits: Any = None, pool: tuple[int, int] | None = None
                  ) -> tuple[float, S.ScoreMap]:
        """One forward+backward, the decoder blocks checkpointed: the activations of one
        block at a time instead of all (the peak-memory target), for one more forward."""
        with S.checkpointed(self.layers):
            return S.gradient_scores(self.fwd, ids, self.params, k=k, splits=splits,
                                     metrics=metrics, loss_fn=self.loss, pool=pool)


def run_sensitivity(
    ckpt: Checkpoint,
    *,
    text: str | Path | None = None,
    tokens: int = 512,
    metrics: Sequence[str] = ("grad_x_weight", "fisher", "wanda"),
    probes: int = 8,
    topk: int = 100,
    mode: str = "global",
    perturb: Sequence[str] = ("zero",),
    scale: float = 1.0,
    controls: Sequence[str] = CONTROLS,
    seeds: Sequence[int] = (0, 1, 2),
    eval_file: str | Path | None = None,
    device: str = "cpu",
    stability: bool = True,
    static: bool = True,
    use_cache: bool = True,
    progress: Callable[[str], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    job_hook: Callable[[SensitivityJob], None] | None = None,
    heatmaps: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The `wstui.sensitivity/1` document for `ckpt` (blocking). Bad input raises
    CheckpointError (one line), a bad setting ValueError. `progress` gets each step's words,
    `on_progress` the pool's `Progress`; `job_hook` gets the job before it starts (to cancel
    it: the call then raises `Cancelled`). `heatmaps` (the app's): each matrix's |g⊙w|
    max-pooled onto at most that grid, and its own top-k, kept beside the document in
    `job.maps` (never in it: see `run_sensitivity_maps`)."""
    metrics = list(dict.fromkeys(metrics))
    check_options(metrics=metrics, mode=mode, perturb=perturb, controls=controls, seeds=seeds,
                  topk=topk, probes=probes, tokens=tokens, scale=scale)
    settings = dict(text=text, tokens=tokens, metrics=metrics, probes=probes, topk=topk,
                    mode=mode, perturb=list(perturb), scale=scale, controls=list(controls),
                    seeds=list(seeds), eval_file=eval_file, stability=stability,
                    static=static, heatmaps=heatmaps)
    job = SensitivityJob(ckpt, settings, device=device, use_cache=use_cache, say=progress)
    if job_hook is not None:
        job_hook(job)
    job.run(on_progress=on_progress)
    return job.document()


def run_sensitivity_maps(ckpt: Checkpoint, *, grid: tuple[int, int] = (48, 64),
                         job_hook: Callable[[SensitivityJob], None] | None = None,
                         **kwargs: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(document, maps): `run_sensitivity` with each matrix's pooled heat map and own top-k
    (`TensorMaps`, by HF name) handed back beside the document, which stays as the CLI's."""
    jobs: list[SensitivityJob] = []

    def hook(job: SensitivityJob) -> None:
        jobs.append(job)
        if job_hook is not None:
            job_hook(job)

    doc = run_sensitivity(ckpt, heatmaps=grid, job_hook=hook, **kwargs)
    return doc, jobs[0].maps


class SensitivityJob(ScanEngine):
    """The study on one pool: a model-scope task, then the static metrics of the model's
    matrices as the tensor tasks of a scan (queued by the model task once it knows them)."""

    _kind = "sensitivity"

    def __init__(self, ckpt: Checkpoint, settings: dict[str, Any], *, device: str,
                 use_cache: bool, say: Say | None = None) -> None:
        super().__init__(ckpt, methods=list(STATIC_METHODS), device=device,
                         use_cache=use_cache, tensors=[], options=STATIC_OPTIONS)
        self.settings = settings
        self._say = say
        self.failure: BaseException | None = None
        self.parts: dict[str, Any] | None = None
        #: with settings["heatmaps"]: per matrix (HF name) its pooled |g⊙w| and own top-k
        self.maps: dict[str, dict[str, Any]] = {}
        self.timings: dict[str, float] = {}
        self._t_start = 0.0
        self._t_static: float | None = None

    def _plan(self) -> None:
        super()._plan()
        self._t_start = time.perf_counter()
        with self._lock:
            add_model_task(self, self._study, label="sensitivity", on_error=self._failed)
            self._phase = "model"

    def _failed(self, exc: BaseException) -> None:
        self.failure = exc

    def _study(self, mctx: ModelContext) -> None:
        def say(msg: str) -> None:
            mctx.step(msg)
            if self._say is not None:
                self._say(msg)

        self.parts, refs = _study(self.checkpoint, mctx.device, self.settings, say,
                                  self.timings, self.maps)
        if refs:
            say("static metrics (alpha, int8 SQNR, stable rank)")
            self._t_static = time.perf_counter()
            self.extend(refs)

    def document(self) -> dict[str, Any]:
        """The document, once the job is done; raises what the study raised."""
        if self.failure is not None:
            raise self.failure
        if self.cancelled or self.parts is None:
            raise Cancelled("sensitivity study cancelled")
        static: dict[str, dict[str, float | None]] = {}
        timings = dict(self.timings)
        end = self._t_end if self._t_end is not None else time.perf_counter()
        if self._t_static is not None:
            static = static_metrics(self.report().entries)
            timings["static_s"] = end - self._t_static
        timings["total_s"] = end - self._t_start
        return build_document(self.parts, static, timings)



def static_metrics(entries: Sequence[Any]) -> dict[str, dict[str, float | None]]:
    """alpha, per-tensor sym int8 SQNR and stable rank of the scanned matrices, by HF name."""
    out: dict[str, dict[str, float | None]] = {}
    for e in entries:
        sp = e.result.metrics.get("spectral", {})
        q = e.result.metrics.get("quantization", {})
        sq = next((s.get("sqnr_db") for s in q.get("schemes", [])
                   if s.get("bits") == 8 and s.get("granularity") == "tensor"
                   and s.get("scheme") == "sym"), None)
        out[e.ref.hf_name or e.ref.name] = {"alpha": sp.get("alpha"), "int8_sqnr_db": sq,
                                            "stable_rank": sp.get("stable_rank")}
    return out


def _static_refs(ckpt: Checkpoint, st: _Study) -> list[TensorRef]:
    """The checkpoint tensors behind the model's 2-D parameters (the static metrics' scan)."""
    names = {st.tensor_name(key) for key, p in st.params.items() if p.dim() == 2}
    return [r for r in ckpt.tensors if (r.hf_name or r.name) in names and r.analyzable
            and r.tied_to is None]


def _study(ckpt: Checkpoint, dev: str, settings: dict[str, Any], say: Say,
           timings: dict[str, float], maps: dict[str, dict[str, Any]] | None = None
           ) -> tuple[dict[str, Any], list[TensorRef]]:
    """Everything measured on the model (the document's parts) and the tensors whose static
    metrics are wanted; with `settings["heatmaps"]`, `maps` filled too (`tensor_maps`). Runs
    on the model task's worker."""
    import torch

    from wstui.lm.build import build_lm
    from wstui.lm.calibration import calibration_ids

    metrics, probes, k = settings["metrics"], settings["probes"], settings["topk"]
    seeds, mode = settings["seeds"], settings["mode"]
    evaluator = None
    evalset = None
    if settings["eval_file"] is not None:
        from wstui.lm.evaluate import read_eval

        evalset = read_eval(settings["eval_file"])
    say("building the model")
    lm = build_lm(ckpt, device=dev)
    timings["build_s"] = lm.build_s
    cal = calibration_ids(lm.tokenizer, settings["text"], settings["tokens"])
    ids = cal.ids.to(dev)
    if evalset is not None:
        from wstui.lm.evaluate import Evaluator

        evaluator = Evaluator(evalset, lm.tokenizer)
    st = _Study(ckpt, lm, dev, k)

    # 1. baseline perplexity, then one forward+backward with every hook
    t = time.perf_counter()
    say("perplexity")
    base_ppl = st.ppl(ids)
    base_acc = evaluator.accuracy(st.model) if evaluator else None
    say("gradients (forward and backward)")
    want_grad = [m for m in metrics if m in S.GRADIENT_METRICS]
    with S.record(linears=st.linears if "wanda" in metrics else None,
                  downs={key: mod for key, mod, _ in st.downs}, layers=st.layers) as rec:
        if want_grad:
            _, scores = st.gradients(ids, want_grad, k, st.splits,
                                     pool=settings.get("heatmaps"))
        else:
            scores = {key: {} for key in st.params}
            with torch.inference_mode():
                st.fwd(ids)
    timings["gradients_s"] = time.perf_counter() - t
    if settings.get("heatmaps") and maps is not None:
        maps.update(tensor_maps(st, scores))
    with torch.no_grad():
        if "wanda" in metrics:
            for key, r in S.wanda_scores(st.params, rec.sq_in, k=k, splits=st.splits).items():
                scores[key]["wanda"] = r
        for key, r in S.magnitude_scores(st.params, k=k, splits=st.splits).items():
            scores[key]["magnitude"] = r
    hstderr: dict[str, float] = {}
    hseed_sets: list[set[tuple[str, int]]] = []
    hseed_totals: list[dict[str, float]] = []
    if "hutchinson" in metrics:
        t = time.perf_counter()
        per_seed = []
        for s in seeds:
            say(f"hutchinson: {probes} probes, seed {s}")
            red, err, _ = S.hutchinson(st.fwd, ids, st.params, probes=probes, seed=s, k=k,
                                       splits=st.splits, loss_fn=st.loss)
            per_seed.append((red, err))
            hseed_sets.append({(p.key, p.idx) for p in S.merge_top(red, k)})
            hseed_totals.append({key: r.total for key, r in red.items()})
        # the estimate over all seeds' probes: mean of the per-seed means
        red0, _ = per_seed[0]
        for key in st.params:
            r = red0[key]
            r.total = sum(ps[0][key].total for ps in per_seed) / len(per_seed)
            errs = [ps[1][key] for ps in per_seed]
            hstderr[key] = math.sqrt(sum(e * e for e in errs)) / len(errs)
            scores[key]["hutchinson"] = r
        timings["hutchinson_s"] = time.perf_counter() - t

    # 2. stability across the two halves of the text
    stab: dict[str, Any] = {"k": k}
    if settings["stability"]:
        t = time.perf_counter()
        stab["halves"] = _halves(st, ids, metrics, scores, say)
        stab["seeds"] = _seed_stability(st, k, seeds, hseed_sets, hseed_totals)
        timings["stability_s"] = time.perf_counter() - t

    # 3. super weights and massive activations
    t = time.perf_counter()
    say("super weights")
    found = S.find_super_weights(st.blocks_fwd, ids, st.downs, first=rec.down)
    supers = []
    for sw in found:
        w = st.params[sw["key"]]
        pick = S.Pick(sw["key"], sw["row"] * w.shape[1] + sw["col"], math.nan)
        with S.perturbed(st.params, [pick], "zero"):
            ppl_z = st.ppl(ids)
        supers.append({"tensor": st.tensor_name(sw["key"]),
                       "block": st.ref_info(sw["key"])["block"], "row": sw["row"],
                       "col": sw["col"], "value": sw["value"], "act_in": sw["act_in"],
                       "act_out": sw["act_out"], "token": sw["token"], "ppl_zeroed": ppl_z,
                       "ppl_ratio": _ratio(ppl_z, base_ppl)})
    timings["super_weights_s"] = time.perf_counter() - t

    # 4. perturbation with controls
    t = time.perf_counter()
    table = _perturbation(st, ids, scores, metrics, found, settings["perturb"],
                          settings["controls"], seeds, k, settings["scale"], base_ppl,
                          evaluator, say)
    timings["perturbation_s"] = time.perf_counter() - t

    # 5. the parts of the document: tensors, top-k
    tensors = []
    for key in st.params:
        rec_t = st.ref_info(key)
        for m in S.METRICS:
            r = scores[key].get(m)
            rec_t[m] = r.total if r is not None else None
        rec_t["hutchinson_stderr"] = hstderr.get(key) if "hutchinson" in metrics else None
        tensors.append(rec_t)
    parts = {
        "checkpoint": ckpt.summary(),
        "device": dev,
        "model": {"model_type": lm.config.model_type, "num_layers": len(st.layers),
                  "num_heads": lm.num_heads, "num_kv_heads": lm.num_kv_heads,
                  "head_dim": lm.head_dim, "tied": lm.tied},
        "settings": {"metrics": metrics, "probes": probes, "topk": k, "mode": mode,
                     "perturb": list(settings["perturb"]), "scale": settings["scale"],
                     "controls": list(settings["controls"]), "seeds": list(seeds),
                     "spike_ratio": S.SPIKE_RATIO},
        "text": cal.record(),
        "perplexity": base_ppl,
        "eval": ({**evalset.record(), "accuracy": base_acc} if evalset else None),
        "tensors": tensors,
        "topk": _topk_doc(st, scores, metrics, mode, k),
        "super_weights": supers,
        "massive_activations": massive(rec.layers),
        "perturbation": table,
        "stability": stab,
    }
    refs = _static_refs(ckpt, st) if settings["static"] else []
    return parts, refs


#: how many of a matrix's own top weights the app keeps beside its heat map
MAP_TOPK = 20


def tensor_maps(st: _Study, scores: S.ScoreMap, metric: str = "grad_x_weight"
                ) -> dict[str, dict[str, Any]]:
    """Per tensor (HF name): its own top weights by `metric` (`top`: rows as in the
    document's top-k) and, for a matrix, its |g⊙w| pooled (`values`: rows of floats,
    `row_edges` and `col_edges` in the matrix's rows and columns, `how`; None for a vector),
    for the app's tensor and block views."""
    out: dict[str, dict[str, Any]] = {}
    for key, sc in scores.items():
        r = sc.get(metric)
        if r is None:
            continue
        picks = [S.Pick(key, int(i), float(v)) for v, i in
                 zip(r.top_scores[:MAP_TOPK].tolist(), r.top_idx[:MAP_TOPK].tolist())]
        p = r.pooled
        out[st.tensor_name(key)] = {
            "metric": metric, "how": p.how if p else None,
            "row_edges": list(p.row_edges) if p else None,
            "col_edges": list(p.col_edges) if p else None,
            "values": p.values.tolist() if p else None, "top": st.weight_rows(picks)}
    return out


def _halves(st: _Study, ids: Any, metrics: Sequence[str], full: S.ScoreMap,
            say: Say) -> dict[str, Any]:
    """Per metric (gradient ones and wanda): Jaccard of the global top-k and Spearman of the
    per-tensor totals between the first and the second half of the text."""
    import torch

    n = ids.shape[1] // 2
    halves = [ids[:, :n], ids[:, n:2 * n]]
    want = [m for m in metrics if m in (*S.GRADIENT_METRICS, "wanda")]
    got: list[S.ScoreMap] = []
    for i, h in enumerate(halves):
        say(f"stability: half {i + 1} of the text")
        with S.record(linears=st.linears if "wanda" in want else None) as rec:
            g = [m for m in want if m in S.GRADIENT_METRICS]
            if g:
                _, sc = st.gradients(h, g, st.k)
            else:
                sc = {key: {} for key in st.params}
                with torch.inference_mode():
                    st.fwd(h)
        if "wanda" in want:
            for key, r in S.wanda_scores(st.params, rec.sq_in, k=st.k).items():
                sc[key]["wanda"] = r
        got.append(sc)
    out: dict[str, Any] = {"tokens": [n, n]}
    keys = list(st.params)
    for m in want:
        a = {key: got[0][key][m] for key in keys if m in got[0][key]}
        b = {key: got[1][key][m] for key in keys if m in got[1][key]}
        ta = {(p.key, p.idx) for p in S.merge_top(a, st.k)}
        tb = {(p.key, p.idx) for p in S.merge_top(b, st.k)}
        common = [key for key in keys if key in a and key in b]
        out[m] = {"jaccard": S.jaccard(ta, tb),
                  "spearman": S.spearman([a[key].total for key in common],
                                         [b[key].total for key in common])}
    return out


def _seed_stability(st: _Study, k: int, seeds: Sequence[int],
                    hsets: list[set[tuple[str, int]]], htotals: list[dict[str, float]]
                    ) -> dict[str, Any]:
    """Pairwise over seeds: the random control's overlap (the chance level of Jaccard@k) and,
    when run, Hutchinson's top-k overlap and the Spearman of its per-tensor totals."""
    sizes = {key: int(p.numel()) for key, p in st.params.items()}
    rsets = [{(p.key, p.idx) for p in S.random_picks(sizes, k, s)} for s in seeds]
    pairs = [(i, j) for i in range(len(seeds)) for j in range(i + 1, len(seeds))]

    def mean(xs: list[float | None]) -> float | None:
        v = [x for x in xs if x is not None]
        return sum(v) / len(v) if v else None

    out: dict[str, Any] = {"seeds": list(seeds), "random_k": {
        "jaccard_mean": mean([S.jaccard(rsets[i], rsets[j]) for i, j in pairs])}}
    if hsets:
        keys = list(st.params)
        out["hutchinson"] = {
            "jaccard_mean": mean([S.jaccard(hsets[i], hsets[j]) for i, j in pairs]),
            "spearman_mean": mean([S.spearman([htotals[i][kk] for kk in keys],
                                              [htotals[j][kk] for kk in keys])
                                   for i, j in pairs]),
        }
    return out


def _perturbation(st: _Study, ids: Any, scores: S.ScoreMap, metrics: Sequence[str],
                  found: list[dict[str, Any]], methods: Sequence[str],
                  controls: Sequence[str], seeds: Sequence[int], k: int, scale: float,
                  base_ppl: float, evaluator: Any, say: Say) -> list[dict[str, Any]]:
    """Each method on each target set: the top-k by each metric; the controls (random k per
    seed; the bottom k by the first metric); the super weights. Weights restored after each."""
    targets: list[tuple[str, str | None, int | None, list[S.Pick]]] = []
    for m in metrics:
        red = {key: sc[m] for key, sc in scores.items() if m in sc}
        targets.append(("top_k", m, None, S.merge_top(red, k)))
    if "random_k" in controls:
        sizes = {key: int(p.numel()) for key, p in st.params.items()}
        for s in seeds:
            targets.append(("random_k", None, s, S.random_picks(sizes, k, s)))
    if "bottom_k" in controls:
        m = metrics[0]
        red = {key: sc[m] for key, sc in scores.items() if m in sc}
        targets.append(("bottom_k", m, None, S.merge_top(red, k, bottom=True)))
    if found:
        picks = [S.Pick(sw["key"], sw["row"] * st.params[sw["key"]].shape[1] + sw["col"],
                        math.nan) for sw in found]
        targets.append(("super_weights", None, None, picks))
    rows = []
    for method in methods:
        for target, metric, seed, picks in targets:
            say(f"perturbation: {method} {target} {metric or ''} {'' if seed is None else seed}")
            with S.perturbed(st.params, picks, method, scale=scale,
                             seed=0 if seed is None else seed):
                ppl = st.ppl(ids)
                acc = evaluator.accuracy(st.model) if evaluator else None
            row = {"method": method, "target": target, "metric": metric, "k": len(picks),
                   "seed": seed, "ppl": ppl, "ppl_ratio": _ratio(ppl, base_ppl)}
            if evaluator is not None:
                row["accuracy"] = acc
            rows.append(row)
    return rows


def _topk_doc(st: _Study, scores: S.ScoreMap, metrics: Sequence[str], mode: str, k: int
              ) -> list[dict[str, Any]]:
    out = []
    for m in metrics:
        red = {key: sc[m] for key, sc in scores.items() if m in sc}
        if mode == "global":
            out.append({"metric": m, "mode": mode, "k": k,
                        "weights": st.weight_rows(S.merge_top(red, k))})
        elif mode == "layerwise":
            groups: dict[Any, list[str]] = {}
            for key in red:
                groups.setdefault(st.ref_info(key)["block"], []).append(key)
            for block in sorted(groups, key=lambda b: (b is None, b if b is not None else 0)):
                out.append({"metric": m, "mode": mode, "k": k, "block": block,
                            "weights": st.weight_rows(S.merge_top(red, k, keys=groups[block]))})
        else:
            for key, head, picks in S.head_top(red, k):
                out.append({"metric": m, "mode": mode, "k": k, "tensor": st.tensor_name(key),
                            "head": head, "weights": st.weight_rows(picks)})
    return out


def sensitivity_document(path: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Open `path` and run the study (what `Scope.sensitivity` and the CLI both call)."""
    from wstui.checkpoint import open_checkpoint

    with open_checkpoint(path) as ckpt:
        return run_sensitivity(ckpt, **kwargs)


__all__ = ["SCHEMA", "Cancelled", "CheckpointError", "SensitivityJob", "check_options",
           "csv_rows", "run_sensitivity", "run_sensitivity_maps", "sensitivity_document"]
