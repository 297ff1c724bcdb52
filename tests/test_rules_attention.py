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

from torch_bridge.symmetry import (R_NONZERO, Block, BlockElement, ComplexDiagonal, ComplexDiagonalElement, GeneralLinear,
                                   Monomial, Orthogonal, Scalar, SymmetryElement, symmetry_spec)

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

    def qkv_angles(self, x):
        """(h, q, k, v, ang) of the subclasses' rotary variants: the stream, the per-head
        projections and the angles position x frequency (frequencies 0.5^i, d/2 of them)."""
        h = self.inp(x)
        T = h.shape[1]
        q, k, v = (self.heads(f(h)) for f in (self.q, self.k, self.v))
        d = q.shape[-1]
        ang = torch.arange(T, dtype=q.dtype)[:, None] * (0.5 ** torch.arange(d // 2, dtype=q.dtype))[None]
        return h, q, k, v, ang

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


def _commutant_block(d, layout, g):
    """A random scaled rotation r R(phi) on every pair of ``layout`` (the commutant's elements)."""
    return ComplexDiagonal(d, layout).sample(g).matrix()


def _with_q_blocks(spec, net, x, qk, blocks):
    """verify() with the query/key site's element replaced by the given per-head blocks."""
    g = spec.sample(GEN().manual_seed(0))
    bad = SymmetryElement({**g, qk.name: BlockElement(torch.stack(blocks), torch.arange(len(blocks)))})
    return spec.verify(net, x, g=bad)


def test_rotary_claims_the_commutant_of_the_rotations():
    """Docs sec. 4: with rotary embeddings (rotate_half, frequency i on units i and i + d/2) the
    query/key heads carry a complex scalar per frequency pair: Block(2, C*^2) = 2 x 4 dimensions,
    connected; keys its inverse transpose. The pair layout is read from the graph."""
    torch.manual_seed(0)
    net = Attn(rotary=True).double().eval()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    qk = next(s for s in spec.sites if "attention query/key" in s.constraints)
    assert qk.group == Block(2, ComplexDiagonal(4, "half"))
    assert (qk.dimension, qk.group.inner.components) == (8, 1)
    assert spec.dimension == 8 + 32 + 64
    assert not any("per-head scalars" in n for n in spec.notes)
    for seed in range(3):
        assert spec.verify(net, x, generator=GEN().manual_seed(seed)) < 1e-10
    # the next larger group, a per-head GL(4) (valid without rotary), breaks it; so do complex
    # scalars on the wrong pairs (2i, 2i + 1)
    g = GEN().manual_seed(2)
    assert _with_q_blocks(spec, net, x, qk, [GeneralLinear(4).sample(g).matrix() for _ in range(2)]) > 1e-3
    assert _with_q_blocks(spec, net, x, qk, [_commutant_block(4, "interleaved", g) for _ in range(2)]) > 1e-3
    assert _with_q_blocks(spec, net, x, qk, [_commutant_block(4, "half", g) for _ in range(2)]) < 1e-10


def _assert_per_head_scalars(group, heads=2, d=4):
    """The fallback claim: one real scalar c_h I per head (its representation may vary: Block of
    Scalar, or of a ScaledPermutation without permutations), nothing larger."""
    assert isinstance(group, Block) and group.heads == heads and group.dimension == heads
    g = GEN().manual_seed(9)
    scalars = BlockElement(torch.stack([float(c) * torch.eye(d, dtype=torch.float64) for c in (1.5, -0.5)]),
                           torch.arange(heads))
    assert group.contains(scalars)
    assert not group.contains(Block(heads, ComplexDiagonal(d), head_perm=False).sample(g))


class _Rotary(Attn):
    """Attention with a rotary-like factor ``q * cos + rotate_half(q) * sin`` whose cos/sin are
    given: ``pairs`` "half" (cos equal on i and i + d/2), "none" (different frequencies on the two
    halves: not a rotation) or "input" (computed from the input)."""

    def __init__(self, pairs):
        super().__init__()
        self.pairs = pairs

    def forward(self, x):
        h, q, k, v, ang = self.qkv_angles(x)
        B, T, _ = h.shape
        d = q.shape[-1]
        second = 1.7 * ang if self.pairs == "none" else ang
        if self.pairs == "input":
            ang = ang + x[..., :1].mean(0)
            second = ang
        cos, sin = torch.cat([ang.cos(), second.cos()], -1), torch.cat([ang.sin(), second.sin()], -1)

        def rot(t):
            return t * cos + torch.cat([-t[..., d // 2:], t[..., :d // 2]], -1) * sin

        y = F.scaled_dot_product_attention(rot(q), rot(k), v, is_causal=True)
        return self.out(self.o(y.transpose(1, 2).reshape(B, T, self.E)) + h)


@pytest.mark.parametrize("pairs", ["none", "input"])
def test_rotary_factor_not_constant_on_pairs_keeps_per_head_scalars_with_a_note(pairs):
    """A factor not constant on the pairs (or not readable: computed from the inputs) does not
    commute with the complex scalars: per-head real scalars only, noted; the commutant breaks."""
    torch.manual_seed(0)
    net = _Rotary(pairs).double().eval()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    qk = next(s for s in spec.sites if "attention query/key" in s.constraints)
    _assert_per_head_scalars(qk.group)
    assert any("per-head scalars" in n for n in spec.notes)
    assert spec.verify(net, x, generator=GEN().manual_seed(0)) < 1e-10
    if pairs == "none":
        g = GEN().manual_seed(3)
        assert _with_q_blocks(spec, net, x, qk, [_commutant_block(4, "half", g) for _ in range(2)]) > 1e-3


def test_rotary_with_pair_constant_factor_claims_the_commutant():
    torch.manual_seed(0)
    net = _Rotary("half").double().eval()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    qk = next(s for s in spec.sites if "attention query/key" in s.constraints)
    assert qk.group == Block(2, ComplexDiagonal(4))
    assert spec.verify(net, x, generator=GEN().manual_seed(1)) < 1e-10


class _RotateEveryTwo(Attn):
    """GPT-J's rotary form: frequency i on the units (2i, 2i + 1), ``cos.repeat_interleave(2)`` and
    ``stack((-x[..., 1::2], x[..., ::2]), -1).flatten(-2)``; ``mixed=True`` pairs the factors the
    rotate-half way instead (constant on (i, i + d/2)) while rotating the (2i, 2i + 1) planes."""

    def __init__(self, mixed=False):
        super().__init__()
        self.mixed = mixed

    def forward(self, x):
        h, q, k, v, ang = self.qkv_angles(x)
        B, T, _ = h.shape
        d = q.shape[-1]
        if self.mixed:
            cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
        else:
            cos, sin = ang.cos().repeat_interleave(2, -1), ang.sin().repeat_interleave(2, -1)

        def rot(t):
            return t * cos + torch.stack((-t[..., 1::2], t[..., ::2]), -1).flatten(-2) * sin

        y = F.scaled_dot_product_attention(rot(q), rot(k), v, is_causal=True)
        return self.out(self.o(y.transpose(1, 2).reshape(B, T, self.E)) + h)


def test_interleaved_rotary_claims_the_commutant_in_its_own_layout():
    """The interleaved layout is read from the graph, not assumed: complex scalars on (2i, 2i + 1);
    on the rotate-half pairs (i, i + d/2) they break the function."""
    torch.manual_seed(0)
    net = _RotateEveryTwo().double().eval()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    qk = next(s for s in spec.sites if "attention query/key" in s.constraints)
    assert qk.group == Block(2, ComplexDiagonal(4, "interleaved"))
    for seed in range(3):
        assert spec.verify(net, x, generator=GEN().manual_seed(seed)) < 1e-10
    g = GEN().manual_seed(6)
    assert _with_q_blocks(spec, net, x, qk, [_commutant_block(4, "half", g) for _ in range(2)]) > 1e-3


def test_rotary_factor_and_rotation_in_different_layouts_keep_real_scalars_with_a_note():
    torch.manual_seed(0)
    net = _RotateEveryTwo(mixed=True).double().eval()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    qk = next(s for s in spec.sites if "attention query/key" in s.constraints)
    _assert_per_head_scalars(qk.group)
    assert any("two layouts" in n for n in spec.notes)
    assert spec.verify(net, x, generator=GEN().manual_seed(0)) < 1e-10


@pytest.mark.parametrize("pairs", ["half", "none"])
def test_rotary_sites_canonical_forms_and_alignment(pairs):
    """Both claims a rotary head can get -- the commutant (ComplexDiagonal) and the fallback
    per-head scalars (Scalar) -- have orbit-invariant canonical forms, and weight matching undoes
    a planted element."""
    from torch_bridge.symmetry import align, canonicalize

    torch.manual_seed(0)
    net = _Rotary(pairs)
    # a full-rank stream: the GL(8) frame of the residual stream needs rank 8 on both sides
    net.inp, net.out = nn.Linear(10, 8), nn.Linear(8, 10)
    net = net.double().eval()
    x = torch.randn(2, 5, 10, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    qk = next(s for s in spec.sites if "attention query/key" in s.constraints)
    if pairs == "half":
        assert qk.group == Block(2, ComplexDiagonal(4))
    else:
        _assert_per_head_scalars(qk.group)
    canon, _ = canonicalize(net, spec=spec)
    k = spec.sample(GEN().manual_seed(3))
    planted = spec.act(k, net)
    canon2, _ = canonicalize(planted, spec=spec)
    for (name, a), b in zip(canon.state_dict().items(), canon2.state_dict().values()):
        assert float((a - b).abs().max()) < 1e-9, name
    g = align(net, planted, x, "weights", spec=spec)
    for site, el in spec.compose(g, k).items():
        assert float((el.matrix() - torch.eye(el.n, dtype=el.dtype)).abs().max()) < 1e-8, site


class _EqualFrequencies(Attn):
    """Rotary on heads of 8 (E=16, H=2) with frequencies (1, 1, 0.5, 0.25): two planes rotate alike."""

    def __init__(self):
        super().__init__(E=16, H=2)

    def forward(self, x):
        h = self.inp(x)
        B, T, _ = h.shape
        q, k, v = (self.heads(f(h)) for f in (self.q, self.k, self.v))
        ang = torch.arange(T, dtype=q.dtype)[:, None] * torch.tensor([1.0, 1.0, 0.5, 0.25], dtype=q.dtype)[None]
        cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)

        def rot(t):
            return t * cos + torch.cat([-t[..., 4:], t[..., :4]], -1) * sin

        y = F.scaled_dot_product_attention(rot(q), rot(k), v)
        return self.out(self.o(y.transpose(1, 2).reshape(B, T, self.E)) + h)


def test_rotary_with_equal_frequencies_is_noted_as_a_sound_subgroup():
    """Equal frequencies leave a larger true group (GL(2, C) on the two planes); the claim stays the
    complex scalars per pair, which keep the function, and a note says the group is larger."""
    torch.manual_seed(0)
    net = _EqualFrequencies().double().eval()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    qk = next(s for s in spec.sites if "attention query/key" in s.constraints)
    assert qk.group == Block(2, ComplexDiagonal(8))
    assert any("coincide" in n and "(0, 1)" in n for n in spec.notes)
    assert spec.verify(net, x, generator=GEN().manual_seed(0)) < 1e-10


# The commutant group and its elements ----------------------------------------------------------

@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_complex_diagonal_group_laws(layout, dtype):
    """Closure, inverse, inverse transpose (r R(phi) -> r^-1 R(phi)) and the action on rows and
    columns, against dense matrices; elements keep the tensors' dtype."""
    G = ComplexDiagonal(6, layout)
    a, b = G.sample(GEN().manual_seed(0)).to(dtype), G.sample(GEN().manual_seed(1)).to(dtype)
    A, B = a.matrix().double(), b.matrix().double()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for el, M in ((a.compose(b), A @ B), (a.inverse(), torch.linalg.inv(A)), (a.dual(), torch.linalg.inv(A).T)):
        assert G.contains(el, 1e-5) and el.dtype == dtype
        assert float((el.matrix().double() - M).abs().max()) < 10 * tol
    W = torch.randn(6, 5, dtype=dtype)
    assert torch.allclose(a.apply(W, 0).double(), A @ W.double(), atol=10 * tol)
    assert torch.allclose(a.apply_dual(W.T, 1).double(), W.T.double() @ torch.linalg.inv(A), atol=10 * tol)
    assert a.apply(W, 0).dtype == dtype
    assert not G.contains(GeneralLinear(6).sample(GEN().manual_seed(2)))
    other = "interleaved" if layout == "half" else "half"
    assert not ComplexDiagonal(6, other).contains(a)
    assert (G.dimension, G.components, G.scalar_part) == (6, 1, R_NONZERO)
    ns = {"ComplexDiagonalElement": ComplexDiagonalElement, "ComplexDiagonal": ComplexDiagonal, "tensor": torch.tensor,
          "torch": torch}
    assert eval(repr(a), ns) == a and eval(repr(G), ns) == G


def test_complex_diagonal_meets():
    C = ComplexDiagonal(4)
    assert C.intersect(GeneralLinear(4)) == C and GeneralLinear(4).intersect(C) == C
    assert C.intersect(Scalar(4)) == Scalar(4)
    assert Block(2, GeneralLinear(4)).intersect(Block(2, C)) == Block(2, C)
    for other in (ComplexDiagonal(4, "interleaved"), Monomial(4), Orthogonal(4)):
        m = C.meet(other)
        assert not m.exact and m.reason and isinstance(m.group, Scalar)  # a sound subgroup, said so


@pytest.mark.parametrize("sides", ["both", "rows", "dual"])
def test_complex_diagonal_frame_is_orbit_invariant_and_fit_recovers(sides):
    """The canonical frame (docs: a complex scalar per pair balancing the two kinds of rows, the
    summed complex rows made real positive) maps every member of an orbit to the same features;
    the closed-form least-squares fit recovers a planted element exactly."""
    G = ComplexDiagonal(8)
    gen = GEN().manual_seed(5)
    X = torch.randn(8, 6, dtype=torch.float64, generator=gen) if sides != "dual" else None
    Y = torch.randn(8, 7, dtype=torch.float64, generator=gen) if sides != "rows" else None
    k = G.sample(gen)
    Xk = None if X is None else k.apply(X, 0)
    Yk = None if Y is None else k.apply_dual(Y, 0)
    e1, inv1, amb = G.frame(X, Y)
    e2, inv2, _ = G.frame(Xk, Yk)
    assert amb == 0 and G.contains(e1) and torch.allclose(inv1, inv2)
    for F, Fk, f in ((X, Xk, "apply"), (Y, Yk, "apply_dual")):
        if F is not None:
            torch.testing.assert_close(getattr(e1, f)(F, 0), getattr(e2, f)(Fk, 0), atol=1e-12, rtol=0)
    assert G.fit(X, Y, Xk, Yk).compose(k).equals(G.identity(), 1e-10)


# Grouped-query attention -----------------------------------------------------------------------

class _GQA(Attn):
    """4 query heads of 2, 2 key/value heads; ``form`` "expand" (one kv head expanded to all query
    heads), "enable_gqa" (sdpa's flag) or "repeat_kv" (HF: unsqueeze, expand, reshape)."""

    def __init__(self, form):
        super().__init__(E=8, H=4)
        self.form = form
        self.k, self.v = nn.Linear(8, 2 if form == "expand" else 4), nn.Linear(8, 2 if form == "expand" else 4)

    def forward(self, x):
        h = self.inp(x)
        B, T, _ = h.shape
        q = self.q(h).view(B, T, 4, 2).transpose(1, 2)
        kv = 1 if self.form == "expand" else 2
        k, v = (f(h).view(B, T, kv, 2).transpose(1, 2) for f in (self.k, self.v))
        if self.form == "expand":
            k, v = k.expand(B, 4, T, 2), v.expand(B, 4, T, 2)
        elif self.form == "repeat_kv":
            k, v = (t[:, :, None].expand(B, 2, 2, T, 2).reshape(B, 4, T, 2) for t in (k, v))
        y = F.scaled_dot_product_attention(q, k, v, enable_gqa=self.form == "enable_gqa")
        return self.out(self.o(y.transpose(1, 2).reshape(B, T, 8)))


@pytest.mark.parametrize("form", ["expand", "enable_gqa", "repeat_kv"])
def test_grouped_query_attention_keeps_one_element_per_kv_head(form):
    """Docs sec. 3: one GL(2) element per key/value head, shared by its query heads (q/k and v/o:
    kv x 4 dimensions each); the function is kept; separate elements on two query heads reading
    the same key break it."""
    torch.manual_seed(0)
    net = _GQA(form).double().eval()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    kv = 1 if form == "expand" else 2
    qk = [s for s in spec.sites if "attention query/key" in s.constraints]
    vo = [s for s in spec.sites if "attention value/output" in s.constraints]
    assert [s.group for s in qk] == [GeneralLinear(2)] * kv and [s.group for s in vo] == [GeneralLinear(2)] * kv
    assert spec.dimension == 64 + 2 * kv * 4 + 64  # inp GL(8), attention, o GL(8)
    assert any("grouped-query attention" in n for n in spec.notes)
    for seed in range(3):
        assert spec.verify(net, x, generator=GEN().manual_seed(seed)) < 1e-10
    # query head 1 transformed differently from query head 0 (both read kv head 0): broken
    bad = _GQA(form).double().eval()
    bad.load_state_dict(net.state_dict())
    A = GeneralLinear(2).sample(GEN().manual_seed(4)).matrix()
    with torch.no_grad():
        bad.q.weight[2:4] = A @ net.q.weight[2:4]
        bad.q.bias[2:4] = A @ net.q.bias[2:4]
    with torch.no_grad():
        assert (bad(x) - net(x)).abs().max() > 1e-3 * net(x).abs().max()


def test_grouped_query_attention_on_hugging_face_llama_is_the_hand_count():
    """HF LLaMA with 2 key/value heads for 4 query heads (repeat_kv) and rotary: per layer one
    commutant (8 dimensions) and one GL(8) per kv head: 2 (16 + 128) = 288 attention dimensions,
    576 in all (docs sec. 12)."""
    pytest.importorskip("transformers")
    import _transformer_models as T

    model, args, kwargs = T.hf_llama(kv_heads=2)
    spec = symmetry_spec(model, args, kwargs)
    qk = [s for s in spec.sites if "attention query/key" in s.constraints]
    assert [s.group for s in qk] == [ComplexDiagonal(8)] * 4
    assert spec.dimension == 576
    assert spec.verify(model, args, kwargs, generator=GEN().manual_seed(0)) < 1e-5


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
