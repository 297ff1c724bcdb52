"""Rules of torch_bridge/symmetry/rules/_attention.py: sdpa, hand-written attention, rotary.

By hand (docs/torch_bridge.md, "Attention"): per head h the scores q_h k_h^T are unchanged by
q_h -> A_h q_h, k_h -> A_h^{-T} k_h (A_h in GL(d)), the heads permute together in q, k, v, and
v_h carries its own B_h in GL(d_v) undone by the output projection's columns. With E = 8,
H = 2, d = 4: query/key site Block(2, GL(4)) (32 dimensions), value site the same (32).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torch_bridge.symmetry import Block, GeneralLinear, Scalar, SymmetryElement, SymmetrySpecError, symmetry_spec

GEN = torch.Generator


class Attn(nn.Module):
    def __init__(self, E=8, H=2, fused=False, hand=False, rotary=False, causal=True):
        super().__init__()
        self.E, self.H, self.fused, self.hand, self.rotary, self.causal = E, H, fused, hand, rotary, causal
        if fused:
            self.qkv = nn.Linear(E, 3 * E)
        else:
            self.q, self.k, self.v = nn.Linear(E, E), nn.Linear(E, E), nn.Linear(E, E)
        self.o = nn.Linear(E, E)
        self.inp, self.out = nn.Linear(3, E), nn.Linear(E, 2)

    def heads(self, t):
        B, T, _ = t.shape
        return t.view(B, T, self.H, self.E // self.H).transpose(1, 2)

    def forward(self, x):
        h = self.inp(x)
        if self.fused:
            q, k, v = self.qkv(h).split(self.E, dim=2)
        else:
            q, k, v = self.q(h), self.k(h), self.v(h)
        q, k, v = self.heads(q), self.heads(k), self.heads(v)
        if self.rotary:
            T, d = q.shape[-2], q.shape[-1]
            ang = torch.arange(T, dtype=q.dtype)[:, None] * (0.5 ** torch.arange(d // 2, dtype=q.dtype))[None]
            cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)

            def rot(t):
                return t * cos + torch.cat([-t[..., d // 2:], t[..., :d // 2]], -1) * sin

            q, k = rot(q), rot(k)
        if self.hand:
            att = q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5)
            T = att.shape[-1]
            mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
            att = att.masked_fill(~mask, float("-inf")).softmax(-1)
            y = att @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        B, _, T, _ = y.shape
        y = y.transpose(1, 2).reshape(B, T, self.E)
        return self.out(self.o(y) + h)


CASES = {"sdpa": {}, "fused": {"fused": True}, "hand": {"hand": True}, "hand_fused": {"hand": True, "fused": True}}


@pytest.mark.parametrize("case", list(CASES))
def test_attention_heads_hand_count(case):
    torch.manual_seed(0)
    net = Attn(**CASES[case]).double().eval()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    att = [s for s in spec.sites if isinstance(s.group, Block)]
    assert [s.group for s in att] == [Block(2, GeneralLinear(4)), Block(2, GeneralLinear(4))]
    qk, vo = att
    assert vo.permutation == qk.name  # one head permutation for q, k and v
    assert any(m.startswith("dual:") for m in qk.members)  # the keys carry A^{-T}
    # the residual stream h (inp + o) is GL(8): between linear maps only
    assert spec.dimension == 32 + 32 + 64
    for seed in range(3):
        assert spec.verify(net, x, generator=GEN().manual_seed(seed)) < 1e-10


def test_a_dense_element_on_the_queries_breaks_attention():
    torch.manual_seed(0)
    net = Attn().double().eval()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    qk = next(s for s in spec.sites if isinstance(s.group, Block))
    g = spec.sample(GEN().manual_seed(0))
    # replace the query/key element by one of GL(8) (mixing heads): not a symmetry
    bad = SymmetryElement({**g, qk.name: GeneralLinear(8).sample(GEN().manual_seed(1))})
    assert spec.verify(net, x, g=bad) > 1e-3


def test_rotary_claims_per_head_scalars_with_a_note():
    torch.manual_seed(0)
    net = Attn(rotary=True).double().eval()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    qk = next(s for s in spec.sites if "attention query/key" in s.constraints)
    assert qk.group == Block(2, Scalar(4))
    assert any("rotary" in n for n in spec.notes)
    assert spec.verify(net, x, generator=GEN().manual_seed(0)) < 1e-10
    # a per-head GL(4) (valid without rotary) is not a symmetry with rotary
    g = spec.sample(GEN().manual_seed(0))
    bad = SymmetryElement({**g, qk.name: Block(2, GeneralLinear(4)).sample(GEN().manual_seed(2))})
    assert spec.verify(net, x, g=bad) > 1e-3


def test_grouped_query_attention_is_refused():
    class GQA(Attn):
        def forward(self, x):
            h = self.inp(x)
            B, T, _ = h.shape
            q = self.q(h).view(B, T, 2, 4).transpose(1, 2)
            k = self.k(h)[..., :4].view(B, T, 1, 4).transpose(1, 2).expand(B, 2, T, 4)
            v = self.v(h)[..., :4].view(B, T, 1, 4).transpose(1, 2).expand(B, 2, T, 4)
            y = F.scaled_dot_product_attention(q, k, v)
            return self.out(self.o(y.transpose(1, 2).reshape(B, T, 8)))

    with pytest.raises(SymmetrySpecError, match="cannot follow"):
        symmetry_spec(GQA().double(), torch.randn(2, 5, 3, dtype=torch.float64))


def test_multihead_attention_module():
    """nn.MultiheadAttention(8, 2): packed in_proj picked with select, heads merged with the
    batch ((T, B * H, d)) and split back for sdpa: q/k Block(2, GL(4)) and v/o Block(2, GL(4))
    (32 + 32), the tanh site 8 units with S = {+-1} (dimension 0): 64."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.p, self.mha, self.head = nn.Linear(3, 8), nn.MultiheadAttention(8, 2), nn.Linear(8, 2)

        def forward(self, x):
            h = torch.tanh(self.p(x))
            return self.head(h + self.mha(h, h, h, need_weights=False)[0])

    torch.manual_seed(0)
    net = M().double().eval()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    assert [s.group for s in spec.sites if isinstance(s.group, Block)] == [Block(2, GeneralLinear(4))] * 2
    assert spec.dimension == 64
    assert spec.verify(net, x, generator=GEN().manual_seed(0)) < 1e-10


def test_softmax_over_units_allows_permutations_only():
    net = nn.Sequential(nn.Linear(3, 5), nn.Softmax(-1), nn.Linear(5, 2)).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    (site,) = spec.sites
    assert site.group.scalings.positive == "trivial" and site.group.scalings.negative is None
    assert spec.verify(net, x, generator=GEN().manual_seed(0)) < 1e-10


def test_t5_relative_position_bias_moves_with_the_heads():
    """T5 (tiny config): RMS-style T5LayerNorm, attention without scaling, a learned relative
    position bias per head passed to sdpa as the mask (its units are the heads: they move with
    the head permutation), cross-attention, tied embeddings. The function is kept."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
                                num_heads=4, decoder_start_token_id=0)
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(cfg).eval()
    ids, dec = torch.randint(0, 64, (2, 7)), torch.randint(0, 64, (2, 5))
    kwargs = {"decoder_input_ids": dec, "use_cache": False}
    spec = symmetry_spec(model, (ids,), kwargs)
    assert sum(isinstance(s.group, Block) for s in spec.sites) == 6  # q/k and v/o of three attentions
    for seed in range(2):
        assert spec.verify(model, (ids,), kwargs, generator=GEN().manual_seed(seed)) < 1e-5


def test_a_learned_per_head_mask_pins_the_head_order():
    """A learned (1, H, T, T) mask parameter passed to sdpa is not moved by any rule: permuting
    the heads would break it, so the head permutation is fixed (the blocks stay free)."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(8, 8) for _ in range(4))
            self.bias = nn.Parameter(torch.randn(1, 2, 5, 5))

        def forward(self, x):
            B, T, _ = x.shape

            def h(t):
                return t.view(B, T, 2, 4).transpose(1, 2)

            y = F.scaled_dot_product_attention(h(self.q(x)), h(self.k(x)), h(self.v(x)), attn_mask=self.bias)
            return self.o(y.transpose(1, 2).reshape(B, T, 8))

    net = M().double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    assert [s.group for s in spec.sites] == [Block(2, GeneralLinear(4), head_perm=False)] * 2
    assert spec.verify(net, x, generator=GEN().manual_seed(0)) < 1e-10
