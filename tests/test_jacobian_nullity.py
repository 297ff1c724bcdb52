"""Whole models: the dimension of the set of function-preserving parameter changes, independently.

The nullity of the Jacobian of all outputs (over a large batch) with respect to all parameters, at
a generic point, is the dimension of everything that keeps the function to first order: the
weight-space group and every additive symmetry. It is computed here by SVD in float64, with
plain torch (no torch_bridge), and compared with the hand count of docs/transformer_symmetries.md
sec. 12 plus exactly the directions the docs list as "not claimed". Low-rank readouts (a 3-class
head on a 16-unit stream) add null-space directions of their own, so the models here have no
output bottleneck.
"""

import math

import pytest
import torch
from torch import nn



def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def rand_nonzero(n, g):
    """Non-zero scalings with random signs, |d| in [0.5, 2]."""
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    return sign * torch.exp(torch.empty(n).uniform_(-0.7, 0.7, generator=g))

def _jacobian_nullity(model, inputs, exact=1e-11):
    """Number of parameter directions that leave every output unchanged to first order (the
    dimension of the set of function-preserving parameter changes at this point), from the SVD
    of the Jacobian of all outputs over a large batch, in float64. Exact null directions sit at
    1e-16 relative; eps > 0 of a norm leaves near-null directions (scalings) at 1e-9..1e-6, which
    `exact` excludes."""
    from torch.func import functional_call, jacrev

    model = model.double().eval()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])
    inputs = tuple(t.double() if t.is_floating_point() else t for t in inputs)

    def f(v):
        params, i = {}, 0
        for n, s in zip(names, shapes):
            k = math.prod(s)
            params[n] = v[i:i + k].view(s)
            i += k
        return functional_call(model, params, inputs).reshape(-1)
    jac = jacrev(f)(flat)
    assert jac.shape[0] >= 2 * flat.numel(), "too few outputs to see the rank"
    s = torch.linalg.svdvals(jac)
    return flat.numel() - int((s > exact * s[0]).sum())


@pytest.mark.slow
def test_nullity_llama_is_hand_count_plus_stream_rotation():
    """An independent check of the LLaMA hand count (docs sec. 12) on a 1-layer model, E=8, H=2,
    d=4, I=16: 3E + Ed + I + E = 80 claimed dimensions, plus the O(8) of the stream through the
    gains (sec. 2 remark, not claimed): 80 + 28 = 108. Nothing else is function-preserving."""
    from _transformer_models import HandRMSNorm, LlamaBlocks, randomize_norms

    torch.manual_seed(0)
    m = randomize_norms(LlamaBlocks(16, 8, 2, 1, 16, 8, HandRMSNorm))
    idx = torch.randint(0, 16, (24, 8), generator=gen(5))
    assert _jacobian_nullity(m, (idx,)) == 80 + 28


@pytest.mark.slow
def test_nullity_encoder_layer_is_hand_count_plus_documented_translations():
    """TransformerEncoderLayer(16, 2, 32) fed by the input: the claimed 288 (docs sec. 12) plus the
    additive symmetries the docs list as not claimed: key bias 16 and (b_v, b_o) 16 (sec. 3);
    directions of 1 that the LayerNorms ignore: out_proj 16 + 1 and linear2 32 + 1 (sec. 1); the
    shift of norm1's output through the feed-forward biases 16 (sec. 10); linear1 reading norm1's
    output, which lies in a hyperplane, 32 (sec. 1): 288 + 130 = 418."""
    torch.manual_seed(0)
    m = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True).eval()
    with torch.no_grad():
        for ln in (m.norm1, m.norm2):
            ln.weight.copy_(rand_nonzero(16, gen(40)))
            ln.bias.copy_(torch.randn(16, generator=gen(41)))
    x = torch.randn(80, 5, 16, generator=gen(5))
    assert _jacobian_nullity(m, (x,)) == 288 + 16 + 16 + 17 + 33 + 16 + 32


@pytest.mark.slow
def test_nullity_sliced_gate_is_hand_count():
    """The issue's slicing example: exactly the 32 scalings of the linear half (docs sec. 6)."""
    from _transformer_models import SlicedGate

    torch.manual_seed(0)
    x = torch.randn(500, 16, generator=gen(5))
    assert _jacobian_nullity(SlicedGate(), (x,)) == 32


@pytest.mark.slow
def test_nullity_untied_nanogpt_is_hand_count_plus_documented_extras():
    """Pre-LN GPT (1 layer, E=8, H=2, MLP 32, V=16, 8 positions) with an untied head: the claimed
    L(2E + 2Ed) + E = 88 (docs sec. 12, untied), plus, not claimed: the stream's O(7) (sec. 1) 21;
    embeddings: a multiple of 1 per token 16 and per position 8, wte/wpe translation orthogonal to
    1, 7; attention: key bias 8, (b_v, b_o) 8, c_proj's multiples of 1 8 + 1, c_attn reading
    ln_1's hyperplane 24; ln_1's beta shift into c_attn's bias 8; MLP: c_proj's multiples of 1
    32 + 1, c_fc reading ln_2's hyperplane 32; ln_2's beta shift 8; lm_head reading ln_f's
    hyperplane, compensated by ln_f's beta 8 (sec. 1, 3, 10): 88 + 190 = 278."""
    from _transformer_models import NanoGPT, randomize_norms

    torch.manual_seed(0)
    m = randomize_norms(NanoGPT(16, 8, 8, 2, 1))
    m.lm_head.weight = nn.Parameter(m.wte.weight.detach().clone() + 0.3 * torch.randn(16, 8, generator=gen(6)))
    idx = torch.randint(0, 16, (40, 8), generator=gen(5))
    extras = 21 + (16 + 8 + 7) + (8 + 8 + 9 + 24) + 8 + (33 + 32) + 8 + 8
    assert _jacobian_nullity(m, (idx,)) == 88 + extras


@pytest.mark.slow
def test_nullity_tied_nanogpt_loses_final_norm_scalings_and_stream_rotation():
    """The same GPT with the head tied to wte (docs sec. 5): the claimed L(2E + 2Ed) = 80 (ln_f's
    scalings are gone: its output must be the dual of the stream), plus the additive directions
    that do not touch wte -- attention 49, ln_1's beta 8, MLP 65, ln_2's beta 8, a multiple of 1
    per position in wpe 8 -- and nothing else: through the tie the stream's O(7), the per-token
    multiples of 1 and the wte/wpe translation all become visible in the logits. 80 + 138 = 218."""
    from _transformer_models import NanoGPT, randomize_norms

    torch.manual_seed(0)
    m = randomize_norms(NanoGPT(16, 8, 8, 2, 1))
    idx = torch.randint(0, 16, (40, 8), generator=gen(5))
    assert _jacobian_nullity(m, (idx,)) == 80 + (49 + 8 + 65 + 8 + 8)


@pytest.mark.slow
def test_nullity_multi_query_llama_is_hand_count_plus_stream_rotation():
    """Grouped-query attention, independently (docs sec. 3 and 12): the 1-layer LLaMA above with one
    key/value head for its 2 query heads: attention norm 8, q/k one commutant element (K d = 4, sec.
    4), v/o one GL(4) (16), ffn norm 8, SwiGLU 16, final norm 8: 60 claimed, plus the stream's O(8)
    through the gains (28): 88. Separate elements per query head would add 4 + 16 more."""
    from _transformer_models import HandRMSNorm, LlamaBlocks, randomize_norms

    torch.manual_seed(0)
    m = randomize_norms(LlamaBlocks(16, 8, 2, 1, 16, 8, HandRMSNorm, kv_heads=1))
    idx = torch.randint(0, 16, (24, 8), generator=gen(5))
    assert _jacobian_nullity(m, (idx,)) == 60 + 28
