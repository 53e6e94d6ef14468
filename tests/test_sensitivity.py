"""analyzers.sensitivity: the scores against autograd by hand, Hutchinson against an exact
Hessian diagonal, a planted super weight, head splits and the perturbation methods."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analyzers import sensitivity as S
from tests.sens_models import tiny_llama


def _ids(n: int = 48, vocab: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (1, n), generator=g)


@pytest.fixture(scope="module")
def llama():
    return tiny_llama(0)


def test_grad_x_weight_and_fisher_match_autograd(llama):
    ids = _ids()
    params = dict(llama.named_parameters())
    loss, scores = S.gradient_scores(llama, ids, params, k=10)
    # by hand: the gradient of the mean next-token cross-entropy
    for p in params.values():
        p.requires_grad_(True)
    logits = llama(ids).logits
    ref_loss = F.cross_entropy(logits[0, :-1], ids[0, 1:])
    grads = torch.autograd.grad(ref_loss, list(params.values()))
    for p in params.values():
        p.requires_grad_(False)
    assert loss == pytest.approx(float(ref_loss.detach()), rel=1e-6)
    for (key, p), g in zip(params.items(), grads):
        gxw = (g * p).abs()
        assert scores[key]["grad_x_weight"].total == pytest.approx(float(gxw.sum()), rel=1e-4)
        assert scores[key]["fisher"].total == pytest.approx(float((g * g).sum()), rel=1e-4)
        top = torch.topk(gxw.flatten(), 10).indices
        assert set(scores[key]["grad_x_weight"].top_idx.tolist()) == set(top.tolist())
        assert p.grad is None and not p.requires_grad  # freed and restored


def test_perplexity_is_exp_of_mean_cross_entropy(llama):
    ids = _ids()
    with torch.no_grad():
        ce = F.cross_entropy(llama(ids).logits[0, :-1], ids[0, 1:])
    assert S.perplexity(llama, ids) == pytest.approx(math.exp(float(ce)), rel=1e-6)


def test_wanda_is_weight_times_input_channel_norm(llama):
    ids = _ids()
    q = llama.model.layers[0].self_attn.q_proj
    key = "model.layers.0.self_attn.q_proj.weight"
    seen = []
    h = q.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().reshape(-1, 32)))
    with S.record(linears={key: q}) as rec, torch.no_grad():
        llama(ids)
    h.remove()
    norms = seen[0].norm(dim=0)
    red = S.wanda_scores({key: q.weight}, rec.sq_in, k=5)[key]
    expect = q.weight.abs() * norms[None, :]
    assert red.total == pytest.approx(float(expect.sum()), rel=1e-5)
    assert red.top_idx.tolist() == torch.topk(expect.flatten(), 5).indices.tolist()


class _TinyLM(torch.nn.Module):
    """Embedding -> tanh(Linear) -> Linear: small enough for an exact Hessian."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.emb = torch.nn.Embedding(12, 5)
        self.hid = torch.nn.Linear(5, 5)
        self.out = torch.nn.Linear(5, 12)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hid(self.emb(ids))))


def _exact_hessian_diag(model: torch.nn.Module, ids: torch.Tensor) -> list[torch.Tensor]:
    ps = list(model.parameters())
    for p in ps:
        p.requires_grad_(True)
    loss = S.next_token_loss(model, ids)
    grads = torch.autograd.grad(loss, ps, create_graph=True)
    diags = []
    for p, g in zip(ps, grads):
        d = torch.zeros(p.numel())
        gf = g.reshape(-1)
        for i in range(p.numel()):
            d[i] = torch.autograd.grad(gf[i], p, retain_graph=True)[0].reshape(-1)[i]
        diags.append(d.reshape(p.shape))
    for p in ps:
        p.requires_grad_(False)
    return diags


def test_hutchinson_matches_exact_hessian_diagonal():
    model = _TinyLM()
    ids = _ids(24, vocab=12, seed=3)
    exact = _exact_hessian_diag(model, ids)
    params = dict(model.named_parameters())
    red, stderr, est = S.hutchinson(model, ids, params, probes=600, seed=0, k=5)
    a = torch.cat([e.reshape(-1) for e in exact]).numpy()
    b = torch.cat([est[kk].reshape(-1) for kk in params]).numpy()
    assert np.corrcoef(a, b)[0, 1] >= 0.9
    for kk, e in zip(params, exact):  # the per-tensor sum is the block's trace, within ~4 SE
        assert abs(red[kk].total - float(e.sum())) <= 4 * stderr[kk] + 1e-6


def _plant_super_weight(model, layer: int, row: int, col: int) -> None:
    """One MLP channel made large (gate and up rows scaled) and one down-projection weight
    that carries it into the residual stream: the mechanism Yu et al. describe."""
    mlp = model.model.layers[layer].mlp
    with torch.no_grad():
        mlp.gate_proj.weight[col] *= 12
        mlp.up_proj.weight[col] *= 12
        mlp.down_proj.weight[row, col] = 25.0


def test_planted_super_weight_is_found_and_matters():
    model = tiny_llama(2, num_hidden_layers=4)
    _plant_super_weight(model, 2, row=5, col=7)
    ids = _ids(40, seed=4)
    downs = [(f"model.layers.{i}.mlp.down_proj.weight", layer.mlp.down_proj,
              layer.mlp.down_proj.weight) for i, layer in enumerate(model.model.layers)]
    before = model.model.layers[2].mlp.down_proj.weight.clone()
    found = S.find_super_weights(model, ids, downs)
    assert found, "no super weight found"
    sw = found[0]
    assert (sw["key"], sw["row"], sw["col"]) == ("model.layers.2.mlp.down_proj.weight", 5, 7)
    assert sw["value"] == 25.0
    assert abs(sw["act_out"]) > S.SPIKE_RATIO * 0.1
    assert torch.equal(model.model.layers[2].mlp.down_proj.weight, before)  # restored
    params = dict(model.named_parameters())
    with torch.no_grad():
        base = model(ids).logits

        def change(picks):
            with S.perturbed(params, picks, "zero"):
                return float((model(ids).logits - base).norm())

        w = params[sw["key"]]
        d_super = change([S.Pick(sw["key"], 5 * w.shape[1] + 7, 0.0)])
        sizes = {kk: p.numel() for kk, p in params.items()}
        d_random = max(change(S.random_picks(sizes, 1, seed)) for seed in range(5))
    assert d_super > 20 * d_random


def test_no_super_weight_without_a_spike(llama):
    downs = [(f"l{i}", layer.mlp.down_proj, layer.mlp.down_proj.weight)
             for i, layer in enumerate(llama.model.layers)]
    # two layers of similar scale: no layer is 50x the median
    assert S.find_super_weights(llama, _ids(), downs) == []


def test_head_split_topk_matches_a_hand_split():
    g = torch.Generator().manual_seed(0)
    score = torch.rand(8, 6, generator=g)  # q: 2 heads of head_dim 4 along rows
    red = S.reduce_scores(score, 3, S.HeadSplit(axis=0, n_heads=2, head_dim=4))
    for h in range(2):
        part = score[4 * h:4 * h + 4]
        top = torch.topk(part.flatten(), 3).indices
        expect = [(int(i) // 6 + 4 * h) * 6 + int(i) % 6 for i in top]
        assert red.heads[h][1].tolist() == expect
    score_o = torch.rand(6, 8, generator=g)  # o: heads along columns
    red = S.reduce_scores(score_o, 2, S.HeadSplit(axis=1, n_heads=2, head_dim=4))
    for h in range(2):
        part = score_o[:, 4 * h:4 * h + 4]
        top = torch.topk(part.flatten(), 2).indices
        expect = [(int(i) // 4) * 8 + int(i) % 4 + 4 * h for i in top]
        assert red.heads[h][1].tolist() == expect
    assert S.head_split("attn_q", (8, 6), 2, 1, 4) == S.HeadSplit(0, 2, 4)
    assert S.head_split("attn_k", (4, 6), 2, 1, 4) == S.HeadSplit(0, 1, 4)
    assert S.head_split("attn_o", (6, 8), 2, 1, 4) == S.HeadSplit(1, 2, 4)
    assert S.head_split("mlp_up", (8, 6), 2, 1, 4) is None


def test_merge_top_is_the_exact_global_topk():
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(5, 7, generator=g), torch.rand(9, generator=g)
    red = {"a": S.reduce_scores(a, 6), "b": S.reduce_scores(b, 6)}
    allv = [("a", i, float(v)) for i, v in enumerate(a.flatten())] + \
           [("b", i, float(v)) for i, v in enumerate(b)]
    allv.sort(key=lambda t: -t[2])
    assert [(p.key, p.idx) for p in S.merge_top(red, 6)] == [(k, i) for k, i, _ in allv[:6]]
    allv.sort(key=lambda t: t[2])
    assert [(p.key, p.idx) for p in S.merge_top(red, 4, bottom=True)] == \
        [(k, i) for k, i, _ in allv[:4]]


def test_perturbation_methods_on_a_hand_made_tensor():
    w = torch.tensor([[0.5, -1.0, 3.0], [0.0, 0.25, -0.125]])
    orig = w.clone()
    params = {"w": w}
    picks = [S.Pick("w", i, 0.0) for i in range(6)]
    with S.perturbed(params, picks, "zero"):
        assert torch.equal(w, torch.zeros_like(w))
    assert torch.equal(w, orig)
    with S.perturbed(params, picks, "sign_flip"):
        assert torch.equal(w, -orig)
    assert torch.equal(w, orig)
    with S.perturbed(params, picks, "bit_flip"):
        bits = w.to(torch.bfloat16).view(torch.int16).tolist()
    # bf16 of 0.5 is 0x3F00, -1.0 0xBF80, 3.0 0x4040, 0.0 0x0000, 0.25 0x3E80, -0.125 0xBE00;
    # flipping bit 14 (the top exponent bit) xors 0x4000
    expect = [0x3F00 ^ 0x4000, 0xBF80 ^ 0x4000, 0x4040 ^ 0x4000, 0x4000, 0x3E80 ^ 0x4000,
              0xBE00 ^ 0x4000]
    assert [b & 0xFFFF for row in bits for b in row] == expect
    assert torch.equal(w, orig)
    assert float(S.bf16_flip_top_exponent(torch.tensor(0.5))) == 2.0 ** 127
    assert float(S.bf16_flip_top_exponent(torch.tensor(0.0))) == 2.0
    assert math.isinf(float(S.bf16_flip_top_exponent(torch.tensor(1.0))))
    with S.perturbed(params, picks[:2], "gauss", scale=0.5, seed=3):
        got = w.flatten()[:2].clone()
        rest = w.flatten()[2:].clone()
    noise = torch.randn(2, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(got, orig.flatten()[:2] + noise * 0.5 * float(orig.std()))
    assert torch.equal(rest, orig.flatten()[2:])
    assert torch.equal(w, orig)


def test_random_picks_are_distinct_and_in_range():
    sizes = {"a": 10, "b": 1000, "c": 5}
    picks = S.random_picks(sizes, 50, seed=0)
    assert len({(p.key, p.idx) for p in picks}) == 50
    assert all(0 <= p.idx < sizes[p.key] for p in picks)
    assert picks == S.random_picks(sizes, 50, seed=0)
    assert picks != S.random_picks(sizes, 50, seed=1)


def test_spearman_and_jaccard():
    assert S.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert S.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties averaged, as scipy.stats.spearmanr: ranks [1.5,1.5,3,4] vs [1,2,3,4]
    assert S.spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)
    assert S.spearman([1, 1, 1], [1, 2, 3]) is None
    assert S.jaccard({1, 2, 3}, {2, 3, 4}) == pytest.approx(0.5)


def test_cluster_rows_picks_the_obvious_k():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(c, 0.05, size=(6, 3)) for c in (0.0, 5.0, 10.0)])
    out = S.cluster_rows(x)
    assert out["k"] == 3
    labels = out["labels"]
    assert len({labels[i] for i in range(6)}) == 1 and len(set(labels)) == 3
