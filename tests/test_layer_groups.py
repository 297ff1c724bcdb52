"""The weight-space groups of non-activation layers, tested both ways with plain torch.

Independent of torch_bridge.symmetry: every test applies a group element by hand to a layer's
parameters (the derivations are in docs/transformer_symmetries.md, section numbers below) and
checks that the function is kept (largest relative difference <= 1e-5 in float32), and that a
random element of the next larger group breaks it (difference far above the tolerance).
For LayerNorm, GroupNorm and gain-free RMSNorm, "breaks" is shown in the strongest form: the
transformed layer's output is not an affine function of the original output at all, so no change
of the following layer can repair it. Some tests also exhibit symmetries the rules do not claim
(the true group is larger); their names and docstrings say so.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _transformer_models import RotaryAttention

TOL = 1e-5     # "keeps the function" (float32)
BROKEN = 1e-2  # "breaks it": a hundred times the float32 noise of these layers would still be far below this


def rel(a, b):
    return ((a - b).abs().max() / a.abs().max()).item()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def rand_perm(n, g):
    return torch.randperm(n, generator=g)


def rand_signs(n, g):
    return torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)


def rand_nonzero(n, g):
    """Non-zero scalings with random signs, |d| in [0.5, 2]."""
    return rand_signs(n, g) * torch.exp(torch.empty(n).uniform_(-0.7, 0.7, generator=g))


def rand_orthogonal(n, g):
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


def rand_gl(n, g):
    """A well-conditioned random invertible matrix (singular values in [0.5, 2], random det sign)."""
    u, v = rand_orthogonal(n, g), rand_orthogonal(n, g)
    s = torch.exp(torch.empty(n).uniform_(-0.7, 0.7, generator=g))
    return u @ torch.diag(s) @ v


def perm_matrix(p):
    """P with (P x)_i = x_{p[i]}."""
    return torch.eye(len(p))[p]


def affine_residual(features, targets):
    """Relative least-squares residual of targets ~ [features, 1] @ M: 0 iff the targets are an
    affine function of the features on these samples."""
    f = torch.cat([features, torch.ones(features.shape[0], 1)], 1).double()
    t = targets.double()
    sol = torch.linalg.lstsq(f, t).solution
    return ((f @ sol - t).norm() / t.norm()).item()


def multiscale_inputs(n_samples, n, g):
    """Inputs whose norms range over four decades, so that eps > 0 of a norm layer matters."""
    scale = 10 ** torch.empty(n_samples, 1).uniform_(-3.5, 0.5, generator=g)
    return torch.randn(n_samples, n, generator=g) * scale


# 1. LayerNorm --------------------------------------------------------------------------------

def _layernorm(n, affine, seed=0):
    ln = nn.LayerNorm(n, elementwise_affine=affine)
    if affine:
        g = gen(seed + 100)
        with torch.no_grad():
            ln.weight.copy_(rand_nonzero(n, g))
            ln.bias.copy_(torch.randn(n, generator=g))
    return ln


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_layernorm_affine_keeps_perm_times_sign_in_and_monomial_out(sign):
    """Sec. 1: LN_{gamma',beta'}(s P x) = P D LN_{gamma,beta}(x), gamma' = s D P gamma, beta' = D P beta."""
    n, g = 12, gen(1)
    ln = _layernorm(n, True)
    p, d = rand_perm(n, g), rand_nonzero(n, g)
    x = multiscale_inputs(64, n, g)
    moved = _layernorm(n, True)
    with torch.no_grad():
        moved.weight.copy_(sign * d * ln.weight[p])
        moved.bias.copy_(d * ln.bias[p])
    assert rel(d * ln(x)[:, p], moved(sign * x[:, p])) <= TOL


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_layernorm_plain_output_carries_the_input_sign(sign):
    """Sec. 1, no affine: LN(s P x) = s P LN(x): the output element is fixed by the input's."""
    n, g = 12, gen(2)
    ln = _layernorm(n, False)
    p = rand_perm(n, g)
    x = multiscale_inputs(64, n, g)
    assert rel(sign * ln(x)[:, p], ln(sign * x[:, p])) <= TOL


def test_layernorm_breaks_under_positive_diagonal():
    """The next larger monomial group (any positive diagonal) on the input: LN(D x) is not an
    affine function of LN(x), whatever gamma, beta and the next layer do."""
    n, g = 12, gen(3)
    ln = _layernorm(n, False)
    x = torch.randn(256, n, generator=g)
    d = torch.exp(torch.empty(n).uniform_(-0.7, 0.7, generator=g))
    assert affine_residual(ln(x), ln(x)) <= TOL
    assert affine_residual(ln(x), ln(x * d)) > BROKEN


@pytest.mark.parametrize("c", [0.5, 3.0, -2.0])
def test_layernorm_breaks_under_scalar_multiple(c):
    """Why no scaling is claimed: with eps > 0, LN(c x) is not an affine function of LN(x) for
    |c| != 1 (inputs whose variance is comparable to eps see the difference)."""
    n, g = 12, gen(4)
    ln = _layernorm(n, False)
    x = multiscale_inputs(256, n, g)
    assert affine_residual(ln(x), ln(c * x)) > BROKEN


def test_layernorm_true_group_is_larger_rotations_fixing_ones():
    """Sec. 1 remark: the design's Perm x {+-I} is a sound subgroup, not the whole group. An
    orthogonal Q with Q 1 = 1 commutes with centring and keeps norms, so LN(Q x) = Q LN(x)."""
    n, g = 12, gen(5)
    ln = _layernorm(n, False)
    ones = torch.ones(n, 1) / math.sqrt(n)
    basis = torch.linalg.qr(torch.cat([ones, torch.randn(n, n - 1, generator=g)], 1))[0]  # first column = +-ones
    inner = rand_orthogonal(n - 1, g)
    q = basis @ torch.block_diag(torch.ones(1, 1), inner) @ basis.T
    x = multiscale_inputs(64, n, g)
    assert rel(ln(x) @ q.T, ln(x @ q.T)) <= TOL


# 2. RMSNorm ---------------------------------------------------------------------------------

def _rmsnorm(n, gain, seed=0):
    m = nn.RMSNorm(n, eps=1e-6, elementwise_affine=gain)
    if gain:
        with torch.no_grad():
            m.weight.copy_(rand_nonzero(n, gen(seed + 200)))
    return m


def test_rmsnorm_gain_keeps_signed_perm_in_and_monomial_out():
    """Sec. 2: RMS_{gamma'}(S P x) = P D RMS_gamma(x) with gamma'_i = d_i s_i gamma_{p(i)}."""
    n, g = 12, gen(6)
    norm = _rmsnorm(n, True)
    p, s, d = rand_perm(n, g), rand_signs(n, g), rand_nonzero(n, g)
    x = multiscale_inputs(64, n, g)
    moved = _rmsnorm(n, True)
    with torch.no_grad():
        moved.weight.copy_(d * s * norm.weight[p])
    assert rel(d * norm(x)[:, p], moved(s * x[:, p])) <= TOL


def test_rmsnorm_gain_breaks_under_orthogonal_with_monomial_output():
    """Next larger group, O(n), on the input of an RMSNorm with gain: the output transform would be
    Gamma Q Gamma^-1, not monomial; acting by Q on the input and Q^T on the next layer's columns
    (the action that is right once the gain is folded) breaks the function."""
    n, g = 12, gen(7)
    norm, nxt = _rmsnorm(n, True), nn.Linear(n, 5)
    q = rand_orthogonal(n, g)
    x = multiscale_inputs(64, n, g)
    moved = nn.Linear(n, 5)
    with torch.no_grad():
        moved.weight.copy_(nxt.weight @ q.T)
        moved.bias.copy_(nxt.bias)
    assert rel(nxt(norm(x)), moved(norm(x @ q.T))) > BROKEN


def test_rmsnorm_gain_orthogonal_acts_through_conjugation():
    """Sec. 2 remark: with all gains non-zero, O(n) still acts, by the parameter-dependent
    W_next <- W_next Gamma Q^T Gamma^-1 (this is what folding the gain makes a plain O(n))."""
    n, g = 12, gen(8)
    norm, nxt = _rmsnorm(n, True), nn.Linear(n, 5)
    q = rand_orthogonal(n, g)
    gam = torch.diag(norm.weight.detach())
    x = multiscale_inputs(64, n, g)
    moved = nn.Linear(n, 5)
    with torch.no_grad():
        moved.weight.copy_(nxt.weight @ gam @ q.T @ torch.linalg.inv(gam))
        moved.bias.copy_(nxt.bias)
    assert rel(nxt(norm(x)), moved(norm(x @ q.T))) <= TOL


def test_rmsnorm_folded_gain_keeps_orthogonal():
    """Sec. 2: fold the gain into the next Linear (W <- W diag(gamma), gamma <- 1): the function is
    unchanged, and then RMS(Q x) = Q RMS(x) for every orthogonal Q."""
    n, g = 12, gen(9)
    norm, nxt = _rmsnorm(n, True), nn.Linear(n, 5)
    x = multiscale_inputs(64, n, g)
    plain, folded = _rmsnorm(n, False), nn.Linear(n, 5)
    with torch.no_grad():
        folded.weight.copy_(nxt.weight * norm.weight)
        folded.bias.copy_(nxt.bias)
    assert rel(nxt(norm(x)), folded(plain(x))) <= TOL
    q = rand_orthogonal(n, g)
    rotated = nn.Linear(n, 5)
    with torch.no_grad():
        rotated.weight.copy_(folded.weight @ q.T)
        rotated.bias.copy_(folded.bias)
    assert rel(folded(plain(x)), rotated(plain(x @ q.T))) <= TOL


def test_rmsnorm_plain_breaks_under_gl_and_scalar():
    """Next larger groups than O(n) for RMSNorm without gain: a generic invertible A and a scalar
    c != +-1 (eps > 0). RMS(A x) is not an affine function of RMS(x)."""
    n, g = 12, gen(10)
    plain = _rmsnorm(n, False)
    x = multiscale_inputs(256, n, g)
    a = rand_gl(n, g)
    assert affine_residual(plain(x), plain(x @ a.T)) > BROKEN
    assert affine_residual(plain(x), plain(3.0 * x)) > BROKEN


def test_hand_written_rmsnorm_is_nn_rmsnorm():
    """The hand-written form x * rsqrt(mean(x^2) + eps) * w computes nn.RMSNorm."""
    from _transformer_models import HandRMSNorm

    n, g = 12, gen(11)
    a, b = HandRMSNorm(n), _rmsnorm(n, True)
    with torch.no_grad():
        a.weight.copy_(b.weight)
    x = multiscale_inputs(64, n, g)
    assert rel(b(x), a(x)) <= TOL


# 3. Attention -------------------------------------------------------------------------------

E, H = 16, 4
D_HEAD = E // H


def _mha(seed=0):
    torch.manual_seed(seed)
    m = nn.MultiheadAttention(E, H, batch_first=True).eval()
    with torch.no_grad():
        m.in_proj_bias.normal_()
        m.out_proj.bias.normal_()
    return m


def _moved_mha(m, q_mat, k_mat, v_mat, o_cols):
    """A copy of m with q rows <- q_mat, k rows <- k_mat, v rows <- v_mat (E x E, biases too) and
    out_proj columns <- o_cols (out_proj.weight @ o_cols)."""
    out = _mha()
    w, b = m.in_proj_weight.detach(), m.in_proj_bias.detach()
    mats = [q_mat, k_mat, v_mat]
    with torch.no_grad():
        for i in range(3):
            sl = slice(i * E, (i + 1) * E)
            out.in_proj_weight[sl] = mats[i] @ w[sl]
            out.in_proj_bias[sl] = mats[i] @ b[sl]
        out.out_proj.weight.copy_(m.out_proj.weight @ o_cols)
        out.out_proj.bias.copy_(m.out_proj.bias)
    return out


def _heads(mats):
    return torch.block_diag(*mats)


def _run(m, x, mask):
    return m(x, x, x, attn_mask=mask, need_weights=False)[0]


CAUSAL = torch.triu(torch.ones(6, 6, dtype=torch.bool), 1)


@pytest.mark.parametrize("mask", [None, CAUSAL], ids=["no_mask", "causal"])
def test_attention_keeps_per_head_gl_head_perm(mask):
    """Sec. 3: q -> A_h q, k -> A_h^-T k per head (q^T k unchanged), v -> B_h v, o columns by
    B_h^-1, and a head permutation shared by q, k, v and o's columns."""
    g = gen(12)
    m = _mha()
    x = torch.randn(2, 6, E, generator=g)
    a = [rand_gl(D_HEAD, g) for _ in range(H)]
    b = [rand_gl(D_HEAD, g) for _ in range(H)]
    heads = rand_perm(H, g)
    hp = torch.kron(perm_matrix(heads), torch.eye(D_HEAD))
    qa, ka = hp @ _heads(a), hp @ _heads([torch.linalg.inv(t).T for t in a])
    vb = hp @ _heads(b)
    moved = _moved_mha(m, qa, ka, vb, torch.linalg.inv(vb))
    assert rel(_run(m, x, mask), _run(moved, x, mask)) <= TOL


def test_attention_keeps_key_padding_mask():
    """Padding masks are per token: the per-head element is unaffected by them."""
    g = gen(13)
    m = _mha()
    x = torch.randn(2, 6, E, generator=g)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1, -2:] = True
    a = [rand_gl(D_HEAD, g) for _ in range(H)]
    b = [rand_gl(D_HEAD, g) for _ in range(H)]
    va = _heads(b)
    moved = _moved_mha(m, _heads(a), _heads([torch.linalg.inv(t).T for t in a]), va, torch.linalg.inv(va))

    def run(mm):
        return mm(x, x, x, key_padding_mask=pad, need_weights=False)[0]
    assert rel(run(m), run(moved)) <= TOL


def test_attention_qk_breaks_under_gl_across_heads():
    """The next larger group for q/k: a full GL(E) A on q with A^-T on k (mixing heads)."""
    g = gen(14)
    m = _mha()
    x = torch.randn(2, 6, E, generator=g)
    a = rand_gl(E, g)
    moved = _moved_mha(m, a, torch.linalg.inv(a).T, torch.eye(E), torch.eye(E))
    assert rel(_run(m, x, None), _run(moved, x, None)) > BROKEN


def test_attention_vo_breaks_under_gl_across_heads():
    """The next larger group for v/o: a full GL(E) B on v with B^-1 on o's columns."""
    g = gen(15)
    m = _mha()
    x = torch.randn(2, 6, E, generator=g)
    b = rand_gl(E, g)
    moved = _moved_mha(m, torch.eye(E), torch.eye(E), b, torch.linalg.inv(b))
    assert rel(_run(m, x, None), _run(moved, x, None)) > BROKEN


def test_attention_qk_breaks_when_k_is_not_dual():
    """q -> A q needs k -> A^-T k exactly: k -> A k (the relation "same") breaks."""
    g = gen(16)
    m = _mha()
    x = torch.randn(2, 6, E, generator=g)
    a = _heads([rand_gl(D_HEAD, g) for _ in range(H)])
    moved = _moved_mha(m, a, a, torch.eye(E), torch.eye(E))
    assert rel(_run(m, x, None), _run(moved, x, None)) > BROKEN


def test_attention_head_perm_must_be_shared_by_v():
    """A head permutation of q and k alone (v, o untouched) breaks."""
    m = _mha()
    x = torch.randn(2, 6, E, generator=gen(17))
    hp = torch.kron(perm_matrix(torch.tensor([1, 0, 3, 2])), torch.eye(D_HEAD))
    moved = _moved_mha(m, hp, hp, torch.eye(E), torch.eye(E))
    assert rel(_run(m, x, None), _run(moved, x, None)) > BROKEN


# 4. Rotary embeddings -----------------------------------------------------------------------

def _rotary(seed=0):
    torch.manual_seed(seed)
    return RotaryAttention(E, H, max_positions=16).eval()


def _scaled_rotations(d, g, planes=None):
    """Sec. 4: the commutant of the rotary rotations: on each frequency plane (i, i + d/2) a
    complex scalar r (cos t, sin t), i.e. r [[cos, -sin], [sin, cos]]."""
    a = torch.zeros(d, d)
    half = d // 2
    for i, j in planes or [(i, i + half) for i in range(half)]:
        r = torch.exp(torch.empty(()).uniform_(-0.7, 0.7, generator=g))
        t = torch.empty(()).uniform_(-math.pi, math.pi, generator=g)
        a[i, i], a[i, j], a[j, i], a[j, j] = r * torch.cos(t), -r * torch.sin(t), r * torch.sin(t), r * torch.cos(t)
    return a


def _moved_rotary(m, q_heads, v_heads, heads=None):
    out = _rotary()
    hp = torch.eye(E) if heads is None else torch.kron(perm_matrix(heads), torch.eye(D_HEAD))
    qa = hp @ _heads(q_heads)
    ka = hp @ _heads([torch.linalg.inv(t).T for t in q_heads])
    vb = hp @ _heads(v_heads)
    with torch.no_grad():
        out.q_proj.weight.copy_(qa @ m.q_proj.weight)
        out.k_proj.weight.copy_(ka @ m.k_proj.weight)
        out.v_proj.weight.copy_(vb @ m.v_proj.weight)
        out.o_proj.weight.copy_(m.o_proj.weight @ torch.linalg.inv(vb))
    return out


def test_rotary_keeps_commutant_head_perm_and_vo_gl():
    g = gen(18)
    m = _rotary()
    x = torch.randn(2, 10, E, generator=g)
    q_heads = [_scaled_rotations(D_HEAD, g) for _ in range(H)]
    v_heads = [rand_gl(D_HEAD, g) for _ in range(H)]
    moved = _moved_rotary(m, q_heads, v_heads, rand_perm(H, g))
    assert rel(m(x), moved(x)) <= TOL


def test_rotary_breaks_under_per_head_gl():
    """The next larger group: per-head GL(d) on q/k (fine without rotary, sec. 3) breaks with it."""
    g = gen(19)
    m = _rotary()
    x = torch.randn(2, 10, E, generator=g)
    eye = [torch.eye(D_HEAD)] * H
    moved = _moved_rotary(m, [rand_gl(D_HEAD, g) for _ in range(H)], eye)
    assert rel(m(x), moved(x)) > BROKEN


def test_rotary_breaks_under_rotation_of_adjacent_pairs():
    """Rotations in the wrong planes, (2i, 2i+1) instead of (i, i + d/2), do not commute."""
    g = gen(20)
    m = _rotary()
    x = torch.randn(2, 10, E, generator=g)
    adjacent = [(2 * i, 2 * i + 1) for i in range(D_HEAD // 2)]
    wrong = [_scaled_rotations(D_HEAD, g, adjacent) for _ in range(H)]
    moved = _moved_rotary(m, wrong, [torch.eye(D_HEAD)] * H)
    assert rel(m(x), moved(x)) > BROKEN


def test_rotary_commutant_keeps_hf_llama():
    """The same element on every layer of Hugging Face's LlamaForCausalLM: HF's rotate-half layout
    pairs coordinates (i, i + d/2) of each head, as sec. 4 assumes."""
    pytest.importorskip("transformers")
    from _transformer_models import CONFIG, hf_llama

    g = gen(34)
    m, args, kwargs = hf_llama()
    h, d = CONFIG["H"], CONFIG["E"] // CONFIG["H"]
    moved = hf_llama()[0]
    with torch.no_grad():
        for layer, new in zip(m.model.layers, moved.model.layers):
            a = [_scaled_rotations(d, g) for _ in range(h)]
            new.self_attn.q_proj.weight.copy_(_heads(a) @ layer.self_attn.q_proj.weight)
            new.self_attn.k_proj.weight.copy_(_heads([torch.linalg.inv(t).T for t in a]) @ layer.self_attn.k_proj.weight)
        ref, out = m(*args, **kwargs).logits, moved(*args, **kwargs).logits
    assert rel(ref, out) <= TOL


def _act_gqa(m, moved, q_of_kv, kv_mats, v_mats, kv_perm, q_perm):
    """Grouped-query attention (q head h reads kv head h // r): q head h by q_of_kv[h] (the
    element of its kv head, or another matrix to break it), k head j by kv_mats[j]^-T, v head j by
    v_mats[j], o's column block h by v_mats[kv(h)]^-1; heads relabelled by kv_perm and q_perm."""
    with torch.no_grad():
        for layer, new in zip(m.model.layers, moved.model.layers):
            at = layer.self_attn
            d = at.head_dim
            r = len(q_perm) // len(kv_perm)
            qp = torch.kron(perm_matrix(q_perm), torch.eye(d))
            kp = torch.kron(perm_matrix(kv_perm), torch.eye(d))
            q_mat = qp @ _heads(q_of_kv)
            k_mat = kp @ _heads([torch.linalg.inv(t).T for t in kv_mats])
            v_mat = kp @ _heads(v_mats)
            o_mat = qp @ _heads([v_mats[h // r] for h in range(len(q_perm))])
            new.self_attn.q_proj.weight.copy_(q_mat @ at.q_proj.weight)
            new.self_attn.k_proj.weight.copy_(k_mat @ at.k_proj.weight)
            new.self_attn.v_proj.weight.copy_(v_mat @ at.v_proj.weight)
            new.self_attn.o_proj.weight.copy_(at.o_proj.weight @ torch.linalg.inv(o_mat))
    return moved


def test_gqa_keeps_one_element_per_kv_head_and_group_perms():
    """Sec. 3, grouped-query attention (HF LLaMA, 4 query heads, 2 key/value heads, rotary): one
    commutant element per kv head shared by its query heads, GL(d) per v head, a permutation of
    the kv groups (their query heads move along) and of the query heads inside a group."""
    pytest.importorskip("transformers")
    from _transformer_models import CONFIG, hf_llama

    g = gen(35)
    m, args, kwargs = hf_llama(kv_heads=2)
    d = CONFIG["E"] // CONFIG["H"]
    kv = [_scaled_rotations(d, g) for _ in range(2)]
    vm = [rand_gl(d, g) for _ in range(2)]
    # kv heads swapped; q heads (0, 1 | 2, 3) -> (3, 2 | 0, 1): group 1 first, its two heads swapped
    kv_perm, q_perm = torch.tensor([1, 0]), torch.tensor([3, 2, 0, 1])
    q_of_kv = [kv[h // 2] for h in range(4)]
    moved = _act_gqa(m, hf_llama(kv_heads=2)[0], q_of_kv, kv, vm, kv_perm, q_perm)
    with torch.no_grad():
        assert rel(m(*args, **kwargs).logits, moved(*args, **kwargs).logits) <= TOL


def test_gqa_breaks_with_different_elements_on_query_heads_sharing_a_key():
    pytest.importorskip("transformers")
    from _transformer_models import CONFIG, hf_llama

    g = gen(36)
    m, args, kwargs = hf_llama(kv_heads=2)
    d = CONFIG["E"] // CONFIG["H"]
    kv = [_scaled_rotations(d, g) for _ in range(2)]
    eye = [torch.eye(d)] * 2
    q_of_kv = [kv[0], _scaled_rotations(d, g), kv[1], kv[1]]   # head 1 does not follow its kv head
    moved = _act_gqa(m, hf_llama(kv_heads=2)[0], q_of_kv, kv, eye, torch.arange(2), torch.arange(4))
    with torch.no_grad():
        assert rel(m(*args, **kwargs).logits, moved(*args, **kwargs).logits) > BROKEN
    q_perm = torch.tensor([2, 1, 0, 3])                            # moves a query head to another group
    moved = _act_gqa(m, hf_llama(kv_heads=2)[0], [torch.eye(d)] * 4, eye, eye, torch.arange(2), q_perm)
    with torch.no_grad():
        assert rel(m(*args, **kwargs).logits, moved(*args, **kwargs).logits) > BROKEN


# 5. Embeddings and a tied output head -------------------------------------------------------

class _TiedLN(nn.Module):
    def __init__(self, v=20, e=12):
        super().__init__()
        self.emb = nn.Embedding(v, e)
        self.ln = nn.LayerNorm(e)
        self.head = nn.Linear(e, v, bias=False)
        self.head.weight = self.emb.weight
        with torch.no_grad():
            self.ln.weight.copy_(rand_nonzero(e, gen(300)))
            self.ln.bias.copy_(torch.randn(e, generator=gen(301)))

    def forward(self, idx):
        return self.head(self.ln(self.emb(idx)))


def _act_tied(m, p, s, d):
    """Stream element s P (on the embedding columns), final-LN output element P D, head columns by
    (P D)^-1: both act on the one tied tensor, so emb' = s emb P^T must equal emb D^-1 P^T."""
    out = _TiedLN()
    with torch.no_grad():
        out.ln.weight.copy_(s * d * m.ln.weight[p])
        out.ln.bias.copy_(d * m.ln.bias[p])
        out.emb.weight.copy_(m.emb.weight[:, p] / d)  # head rule: W (P D)^-1
    return out


def test_tied_head_keeps_dual_scalar():
    """Sec. 5: tying makes the final norm's output element the dual of the stream's: s P D with
    D = s I (a global sign), never a free diagonal."""
    g = gen(21)
    m = _TiedLN()
    idx = torch.randint(0, 20, (3, 7), generator=g)
    p = rand_perm(12, g)
    for s in (1.0, -1.0):
        moved = _act_tied(m, p, s, torch.full((12,), s))
        assert rel(m(idx), moved(idx)) <= TOL


def test_tied_head_breaks_under_free_diagonal():
    """The untied rule (final-norm output D free) applied to the tied tensor breaks the function:
    the embedding then feeds the LayerNorm a non-uniformly scaled stream."""
    g = gen(22)
    m = _TiedLN()
    idx = torch.randint(0, 20, (3, 7), generator=g)
    moved = _act_tied(m, rand_perm(12, g), 1.0, rand_nonzero(12, g))
    assert rel(m(idx), moved(idx)) > BROKEN


def test_tied_embedding_read_directly_by_its_head_keeps_orthogonal_breaks_gl():
    """Sec. 5: logits E E[t] (the head is the embedding, nothing between): the embedding's
    element g must equal its own dual g^-T, so the group is O(n); a generic GL element breaks."""
    g = gen(39)
    torch.manual_seed(0)
    emb = torch.randn(20, 6)
    idx = torch.randint(0, 20, (3, 7), generator=g)

    def logits(e):
        return F.embedding(idx, e) @ e.T
    q = rand_orthogonal(6, g)
    assert rel(logits(emb), logits(emb @ q.T)) <= TOL
    assert rel(logits(emb), logits(emb @ rand_gl(6, g).T)) > BROKEN


# 6. Gated units -----------------------------------------------------------------------------

class _SwiGLU(nn.Module):
    def __init__(self, e=8, h=16):
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(e, h), nn.Linear(e, h), nn.Linear(h, e)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


def _moved_glu(m, gate_mat, up_mat, down_cols):
    out = _SwiGLU()
    with torch.no_grad():
        for name, mat in (("gate", gate_mat), ("up", up_mat)):
            src, dst = getattr(m, name), getattr(out, name)
            dst.weight.copy_(mat @ src.weight)
            dst.bias.copy_(mat @ src.bias)
        out.down.weight.copy_(m.down.weight @ down_cols)
        out.down.bias.copy_(m.down.bias)
    return out


def test_swiglu_keeps_up_scaling_with_shared_perm():
    """Sec. 6: gate rows by P (SiLU: S = {1}), up rows by P D (any non-zero D), down columns by
    (P D)^-1."""
    g = gen(23)
    m = _SwiGLU()
    x = torch.randn(32, 8, generator=g)
    pm = perm_matrix(rand_perm(16, g))
    pd = pm @ torch.diag(rand_nonzero(16, g))
    assert rel(m(x), _moved_glu(m, pm, pd, torch.linalg.inv(pd))(x)) <= TOL


def test_swiglu_breaks_under_gl_on_up():
    """The next larger group on the linear branch: a dense A on up rows, A^-1 on down columns."""
    g = gen(24)
    m = _SwiGLU()
    x = torch.randn(32, 8, generator=g)
    a = rand_gl(16, g)
    assert rel(m(x), _moved_glu(m, torch.eye(16), a, torch.linalg.inv(a))(x)) > BROKEN


def test_swiglu_breaks_with_untied_perms_or_gate_scaling():
    g = gen(25)
    m = _SwiGLU()
    x = torch.randn(32, 8, generator=g)
    p1, p2 = perm_matrix(rand_perm(16, g)), perm_matrix(rand_perm(16, g))
    assert rel(m(x), _moved_glu(m, p1, p2, p2.T)(x)) > BROKEN
    dg = torch.diag(torch.exp(torch.empty(16).uniform_(-0.7, 0.7, generator=g)))
    assert rel(m(x), _moved_glu(m, dg, torch.eye(16), torch.linalg.inv(dg))(x)) > BROKEN


# 7. Grouped and depthwise convolutions ------------------------------------------------------

def _dense(w, groups):
    """The (out, in, k, k) weight of a grouped conv's (out, in/groups, k, k) weight (zeros off the
    diagonal blocks)."""
    out, per_in = w.shape[:2]
    per_out = out // groups
    full = w.new_zeros(out, per_in * groups, *w.shape[2:])
    for gi in range(groups):
        full[gi * per_out:(gi + 1) * per_out, gi * per_in:(gi + 1) * per_in] = w[gi * per_out:(gi + 1) * per_out]
    return full


def _grouped(full, groups):
    """The diagonal blocks of a dense weight: what a grouped conv can express (off-block entries
    are dropped, which is where an element outside the group loses the function)."""
    out, n_in = full.shape[:2]
    per_out, per_in = out // groups, n_in // groups
    return torch.cat([full[gi * per_out:(gi + 1) * per_out, gi * per_in:(gi + 1) * per_in] for gi in range(groups)])


class _ThreeConvs(nn.Module):
    """conv(3->8) - conv(8->8, groups) - conv(8->4): linear between, so the group of each space is
    exactly what the grouped conv allows."""

    def __init__(self, groups):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1, groups=groups)
        self.c = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return self.c(self.b(self.a(x)))


def _moved_convs(m, groups, a_mat, b_mat):
    """a's output (b's input) by a_mat, b's output by b_mat, c's columns by b_mat^-1."""
    out = _ThreeConvs(groups)
    with torch.no_grad():
        out.a.weight.copy_(torch.einsum("ij,jokl->iokl", a_mat, m.a.weight))
        out.a.bias.copy_(a_mat @ m.a.bias)
        full = torch.einsum("ij,jokl,om->imkl", b_mat, _dense(m.b.weight.detach(), groups), torch.linalg.inv(a_mat))
        out.b.weight.copy_(_grouped(full, groups))
        out.b.bias.copy_(b_mat @ m.b.bias)
        out.c.weight.copy_(torch.einsum("oikl,ij->ojkl", m.c.weight, torch.linalg.inv(b_mat)))
        out.c.bias.copy_(m.c.bias)
    return out


def _block_perm(blocks, size, perm):
    return torch.kron(perm_matrix(perm), torch.eye(size)) if perm is not None else torch.eye(blocks * size)


def test_grouped_conv_keeps_block_gl_with_tied_block_perm():
    """Sec. 7: groups=2: input Block(2, GL(4)), output Block(2, GL(4)), one block permutation."""
    g = gen(26)
    m = _ThreeConvs(2)
    x = torch.randn(2, 3, 5, 5, generator=g)
    swap = _block_perm(2, 4, torch.tensor([1, 0]))
    a_mat = swap @ torch.block_diag(rand_gl(4, g), rand_gl(4, g))
    b_mat = swap @ torch.block_diag(rand_gl(4, g), rand_gl(4, g))
    assert rel(m(x), _moved_convs(m, 2, a_mat, b_mat)(x)) <= TOL


def test_grouped_conv_breaks_under_full_gl_or_untied_block_perm():
    g = gen(27)
    m = _ThreeConvs(2)
    x = torch.randn(2, 3, 5, 5, generator=g)
    full = rand_gl(8, g)
    # the best one can do with a dense input element: project it to the block diagonal for the
    # grouped weight (what the weight can express); the function still changes
    assert rel(m(x), _moved_convs(m, 2, full, torch.eye(8))(x)) > BROKEN
    swap = _block_perm(2, 4, torch.tensor([1, 0]))
    assert rel(m(x), _moved_convs(m, 2, swap, torch.eye(8))(x)) > BROKEN


def test_depthwise_conv_keeps_tied_perm_free_scalings():
    """Depthwise (groups = channels): input P D_in, output P D_out with independent D's."""
    g = gen(28)
    m = _ThreeConvs(8)
    x = torch.randn(2, 3, 5, 5, generator=g)
    pm = perm_matrix(rand_perm(8, g))
    a_mat = pm @ torch.diag(rand_nonzero(8, g))
    b_mat = pm @ torch.diag(rand_nonzero(8, g))
    assert rel(m(x), _moved_convs(m, 8, a_mat, b_mat)(x)) <= TOL
    other = perm_matrix(rand_perm(8, g))
    assert rel(m(x), _moved_convs(m, 8, a_mat, other)(x)) > BROKEN


# 8. GroupNorm -------------------------------------------------------------------------------

def _gn(seed=0):
    m = nn.GroupNorm(2, 8)
    with torch.no_grad():
        m.weight.copy_(rand_nonzero(8, gen(seed + 400)))
        m.bias.copy_(torch.randn(8, generator=gen(seed + 401)))
    return m


def test_groupnorm_keeps_block_perm_sign_per_group_and_monomial_out():
    """Sec. 8: input: channel perms within groups, a group perm, a sign per group (Block(G, Perm x
    {+-I})); output P D with the same P and any non-zero D (gamma, beta absorb D)."""
    g = gen(29)
    m = _gn()
    x = torch.randn(3, 8, 4, 4, generator=g) * 10 ** torch.empty(3, 1, 1, 1).uniform_(-3, 0, generator=g)
    within = torch.cat([rand_perm(4, g), 4 + rand_perm(4, g)])
    p = torch.cat([within[4:], within[:4]])  # swap the two groups as well
    s = torch.repeat_interleave(rand_signs(2, g), 4)
    d = rand_nonzero(8, g)
    moved = _gn()
    with torch.no_grad():
        moved.weight.copy_(d * s * m.weight[p])
        moved.bias.copy_(d * m.bias[p])
    sx = (s[:, None, None] * x[:, p])
    assert rel(d[:, None, None] * m(x)[:, p], moved(sx)) <= TOL


def test_groupnorm_breaks_under_perm_across_groups_sign_per_channel_or_scaling():
    g = gen(30)
    m = _gn()
    x = torch.randn(64, 8, 2, 2, generator=g) * 10 ** torch.empty(64, 1, 1, 1).uniform_(-3, 0, generator=g)

    def feats(t):
        return m(t).permute(0, 2, 3, 1).reshape(-1, 8)
    across = torch.tensor([4, 1, 2, 3, 0, 5, 6, 7])   # swaps a channel of group 0 with one of group 1
    assert affine_residual(feats(x), feats(x[:, across])) > BROKEN
    one_sign = torch.ones(8)
    one_sign[0] = -1
    assert affine_residual(feats(x), feats(one_sign[:, None, None] * x)) > BROKEN
    assert affine_residual(feats(x), feats(3.0 * x)) > BROKEN


# 9. Per-channel PReLU -----------------------------------------------------------------------

def _prelu_net(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(6, 8), nn.PReLU(8), nn.Linear(8, 3))
    with torch.no_grad():
        m[1].weight.copy_(0.1 + 0.4 * torch.rand(8, generator=gen(seed + 500)))
    return m


def _moved_prelu(m, p, d):
    out = _prelu_net()
    with torch.no_grad():
        out[0].weight.copy_(d[:, None] * m[0].weight[p])
        out[0].bias.copy_(d * m[0].bias[p])
        out[1].weight.copy_(m[1].weight[p])
        out[2].weight.copy_(m[2].weight[:, p] / d)
        out[2].bias.copy_(m[2].bias)
    return out


def test_prelu_per_channel_keeps_perm_with_slopes_and_positive_scalings():
    """Sec. 9: PReLU with per-channel slopes a: P D with D > 0, the slopes permuted by P."""
    g = gen(31)
    m = _prelu_net()
    x = torch.randn(32, 6, generator=g)
    d = torch.exp(torch.empty(8).uniform_(-0.7, 0.7, generator=g))
    assert rel(m(x), _moved_prelu(m, rand_perm(8, g), d)(x)) <= TOL


def test_prelu_breaks_under_negative_scaling_or_unpermuted_slopes():
    g = gen(32)
    m = _prelu_net()
    x = torch.randn(32, 6, generator=g)
    d = torch.ones(8)
    d[3] = -1.0
    assert rel(m(x), _moved_prelu(m, torch.arange(8), d)(x)) > BROKEN
    p = rand_perm(8, g)
    moved = _moved_prelu(m, p, torch.ones(8))
    with torch.no_grad():
        moved[1].weight.copy_(m[1].weight)  # slopes left in place
    assert rel(m(x), moved(x)) > BROKEN


# 9b. Weight normalisation ---------------------------------------------------------------------

def test_weight_norm_keeps_monomial_input_with_rescaled_magnitudes():
    """W = g v / |v| (per output row): the columns take (P D)^-1 by v' = v (P D)^-1 and
    g'_i = g_i |v'_i| / |v_i|, a parameter-dependent but genuine group action (composing two
    elements gives the composed element), so the ReLU site before a weight-normed Linear keeps
    its positive scalings (docs sec. 12, odd cases: 16). Keeping g unchanged breaks it."""
    g = gen(40)
    torch.manual_seed(0)
    a = nn.Linear(6, 16)
    b = torch.nn.utils.parametrizations.weight_norm(nn.Linear(16, 5))
    x = torch.randn(32, 6, generator=g)
    v = b.parametrizations.weight.original1.detach()
    mag = b.parametrizations.weight.original0.detach()
    p = rand_perm(16, g)
    d = torch.exp(torch.empty(16).uniform_(-0.7, 0.7, generator=g))

    def net(wa, ba, w, bb):
        return F.linear(torch.relu(F.linear(x, wa, ba)), w, bb)
    ref = net(a.weight, a.bias, b.weight, b.bias)
    v2 = v[:, p] / d                                               # v (P D)^-1
    mag2 = mag * v2.norm(dim=1, keepdim=True) / v.norm(dim=1, keepdim=True)
    w2 = mag2 * v2 / v2.norm(dim=1, keepdim=True)
    wa2, ba2 = d[:, None] * a.weight[p], d * a.bias[p]
    assert rel(ref, net(wa2, ba2, w2, b.bias)) <= TOL
    w_kept_g = mag * v2 / v2.norm(dim=1, keepdim=True)
    assert rel(ref, net(wa2, ba2, w_kept_g, b.bias)) > BROKEN


# 10. Residual ties --------------------------------------------------------------------------

def test_residual_needs_the_same_element_on_both_summands():
    """Sec. 10: y = x + f(x) with f = Linear - ReLU - Linear: the stream element T must be the one
    of f's output; the inner ReLU site stays independent."""
    g = gen(33)
    torch.manual_seed(0)
    inp, f1, f2, out = nn.Linear(6, 8), nn.Linear(8, 12), nn.Linear(12, 8), nn.Linear(8, 3)

    def net(ws, x):
        a, b, c, d = ws
        h = a(x)
        return d(h + c(torch.relu(b(h))))
    x = torch.randn(16, 6, generator=g)

    def moved(t_stream, t_branch, inner):
        ws = [nn.Linear(6, 8), nn.Linear(8, 12), nn.Linear(12, 8), nn.Linear(8, 3)]
        with torch.no_grad():
            ws[0].weight.copy_(t_stream @ inp.weight)
            ws[0].bias.copy_(t_stream @ inp.bias)
            ws[1].weight.copy_(inner @ f1.weight @ torch.linalg.inv(t_stream))
            ws[1].bias.copy_(inner @ f1.bias)
            ws[2].weight.copy_(t_branch @ f2.weight @ torch.linalg.inv(inner))
            ws[2].bias.copy_(t_branch @ f2.bias)
            ws[3].weight.copy_(out.weight @ torch.linalg.inv(t_stream))
            ws[3].bias.copy_(out.bias)
        return ws
    inner = perm_matrix(rand_perm(12, g)) @ torch.diag(torch.exp(torch.empty(12).uniform_(-0.7, 0.7, generator=g)))
    t = rand_gl(8, g)   # nothing reads the stream but Linears: GL(8)
    ref = net([inp, f1, f2, out], x)
    assert rel(ref, net(moved(t, t, inner), x)) <= TOL
    assert rel(ref, net(moved(t, rand_gl(8, g), inner), x)) > BROKEN


def test_token_mixing_keeps_coupled_scalar():
    """Sec. 10: in an MLP-Mixer block, scaling norm1's affine parameters by lambda and the token
    Linear's weight (not its bias) by 1/lambda keeps the function, although GELU allows no scaling
    of either axis alone (the coupled scalar the per-axis rule does not claim)."""
    from _transformer_models import mlp_mixer

    m, (x,), _ = mlp_mixer()
    moved, _, _ = mlp_mixer()
    lam = -1.7
    with torch.no_grad():
        for blk, new in zip(m.blocks, moved.blocks):
            new.norm1.weight.copy_(lam * blk.norm1.weight)
            new.norm1.bias.copy_(lam * blk.norm1.bias)
            new.token_fc1.weight.copy_(blk.token_fc1.weight / lam)
        assert rel(m(x), moved(x)) <= TOL
        moved.blocks[0].token_fc1.bias.mul_(1 / lam)   # scaling the bias too breaks it
        assert rel(m(x), moved(x)) > BROKEN


def _lstm_net(seed=0):
    torch.manual_seed(seed)
    return nn.LSTM(5, 6, batch_first=True).eval(), nn.Linear(6, 3)


def _moved_lstm(lstm, head, p, s):
    """Hidden units permuted by p and signed by s: the permutation acts on each of the four gate
    blocks (i, f, g, o) of the rows and on W_hh's columns; the sign flips the g gate's rows (tanh is
    odd, so c and h flip) and the columns of W_hh and of the head."""
    n = lstm.hidden_size
    new, new_head = _lstm_net()
    rows = torch.cat([k * n + p for k in range(4)])
    row_sign = torch.cat([torch.ones(2 * n), s[torch.arange(n)], torch.ones(n)])
    with torch.no_grad():
        new.weight_ih_l0.copy_(row_sign[:, None] * lstm.weight_ih_l0[rows])
        new.weight_hh_l0.copy_(row_sign[:, None] * lstm.weight_hh_l0[rows][:, p] * s)
        new.bias_ih_l0.copy_(row_sign * lstm.bias_ih_l0[rows])
        new.bias_hh_l0.copy_(row_sign * lstm.bias_hh_l0[rows])
        new_head.weight.copy_(head.weight[:, p] * s)
        new_head.bias.copy_(head.bias)
    return new, new_head


def test_lstm_keeps_signed_perm_of_hidden_units_and_breaks_under_scaling():
    """The LSTM case of the docs (sec. 12): signed permutations of the hidden units, gates tied;
    a positive scaling of one unit (with the inverse on every column that reads it) breaks."""
    g = gen(37)
    lstm, head = _lstm_net()
    x = torch.randn(4, 7, 5, generator=g)

    def run(mm, hh):
        return hh(mm(x)[0])
    p, s = rand_perm(6, g), rand_signs(6, g)
    assert rel(run(lstm, head), run(*_moved_lstm(lstm, head, p, s))) <= TOL
    new, new_head = _moved_lstm(lstm, head, torch.arange(6), torch.ones(6))
    with torch.no_grad():
        for name in ("weight_ih_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(new, name)[2 * 6] *= 2.0            # scale unit 0 of the g gate ...
        new.weight_hh_l0[2 * 6] *= 2.0
        new.weight_hh_l0[:, 0] /= 2.0                    # ... and undo it on h's readers
        new_head.weight[:, 0] /= 2.0
    assert rel(run(lstm, head), run(new, new_head)) > BROKEN


def test_conv_transpose_rows_are_along_dim_1():
    """ConvTranspose2d weight (in, out, k, k): its output units (a ReLU site, P D with D > 0) are
    on dim 1; the next conv's columns take (P D)^-1."""
    g = gen(38)
    torch.manual_seed(0)
    m = nn.Sequential(nn.ConvTranspose2d(3, 8, 2, stride=2), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    x = torch.randn(2, 3, 4, 4, generator=g)
    p = rand_perm(8, g)
    d = torch.exp(torch.empty(8).uniform_(-0.7, 0.7, generator=g))
    moved = nn.Sequential(nn.ConvTranspose2d(3, 8, 2, stride=2), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    with torch.no_grad():
        moved[0].weight.copy_(m[0].weight[:, p] * d[None, :, None, None])
        moved[0].bias.copy_(m[0].bias[p] * d)
        moved[2].weight.copy_(m[2].weight[:, p] / d[None, :, None, None])
        moved[2].bias.copy_(m[2].bias)
    assert rel(m(x), moved(x)) <= TOL
    with torch.no_grad():   # the same element with a negative scaling: ReLU's group is D > 0
        moved[0].weight.copy_(m[0].weight[:, p] * -d[None, :, None, None])
        moved[0].bias.copy_(m[0].bias[p] * -d)
        moved[2].weight.copy_(m[2].weight[:, p] / -d[None, :, None, None])
    assert rel(m(x), moved(x)) > BROKEN
