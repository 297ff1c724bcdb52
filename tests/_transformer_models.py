"""Small transformers and odd-case networks for the symmetry tests (issue 10).

Every builder returns ``(model, args, kwargs)``: the model in eval mode with random weights
(norm gains and biases randomised too, so that a wrong action on them shows), a tuple of example
positional inputs and a dict of example keyword inputs, e.g. ``model(*args, **kwargs)``.
All are small enough to export and run in well under a second on one CPU thread.

* :func:`nanogpt` -- nanoGPT-style GPT: token + position embeddings, pre-LN blocks, fused qkv
  Linear ``.split`` into q, k, v, hand-written causal attention, GELU MLP, final LN and an
  lm_head tied to the token embedding.
* :func:`llama_blocks` -- a LLaMA-style decoder written by hand: RMSNorm (hand-written
  ``x * rsqrt(mean(x^2) + eps) * w`` or ``nn.RMSNorm``), rotary embeddings (rotate-half form,
  pairs ``(i, i + d/2)``), SwiGLU MLP, untied lm_head; optionally grouped-query attention
  (``kv_heads``, ``llama_gqa_hand``: 2 key/value heads for 4 query heads, ``repeat_interleave``).
* :func:`hf_gpt2`, :func:`hf_bert`, :func:`hf_vit`, :func:`hf_llama`, :func:`hf_t5` -- Hugging Face
  models from tiny configs (no download).
* odd cases of the issue: :func:`tied_head`, :func:`weight_norm_mlp`, :func:`spectral_norm_mlp`,
  :func:`parametrized_mlp`, :func:`pruned_mlp`, :func:`sliced_gate`, :func:`shared_module`,
  :func:`encoder_layer`, :func:`lstm_model`, :func:`multihead_attention`, :func:`mlp_mixer`,
  :func:`grouped_conv_groupnorm`, :func:`prelu_mlp`, :func:`conv_transpose`.

The hand counts of their weight-space groups are derived in docs/transformer_symmetries.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CONFIG", "randomize_norms", "HandRMSNorm", "RotaryAttention", "NanoGPT", "LlamaBlocks",
    "nanogpt", "llama_blocks", "hf_gpt2", "hf_bert", "hf_vit", "hf_llama", "hf_t5",
    "tied_head", "tied_direct", "weight_norm_mlp", "spectral_norm_mlp", "parametrized_mlp", "pruned_mlp", "sliced_gate",
    "shared_module", "encoder_layer", "lstm_model", "multihead_attention", "mlp_mixer",
    "grouped_conv_groupnorm", "prelu_mlp", "conv_transpose",
    "TRANSFORMERS", "ODD_CASES",
]

# One tiny configuration for every transformer: hidden size E, H heads of size d = E / H, L layers,
# MLP width I, vocabulary V, T tokens per example sequence, B sequences.
CONFIG = dict(E=32, H=4, L=2, I=64, V=64, T=8, B=2, max_positions=16)


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every LayerNorm/RMSNorm/GroupNorm (and HF norm modules with a ``weight``) random gains
    and biases, in place; returns ``model`` in eval mode.

    Fresh norms (gain 1, bias 0) hide errors in how a symmetry acts on them. Gains are drawn away
    from zero (``|gain| >= 0.5``, random sign) so that they stay invertible.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        name = type(m).__name__
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)) or name.endswith(("RMSNorm", "LayerNorm")):
            w = getattr(m, "weight", None)
            b = getattr(m, "bias", None)
            with torch.no_grad():
                if isinstance(w, torch.Tensor):
                    sign = torch.where(torch.rand(w.shape, generator=g) < 0.5, -1.0, 1.0)
                    w.copy_(sign * (0.5 + torch.rand(w.shape, generator=g)))
                if isinstance(b, torch.Tensor):
                    b.copy_(0.3 * torch.randn(b.shape, generator=g))
    return model.eval()


def _tokens(seed: int = 1, vocab: int | None = None):
    c = CONFIG
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab or c["V"], (c["B"], c["T"]), generator=g)


# nanoGPT ------------------------------------------------------------------------------------

class _CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.register_buffer("bias", torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class _GPTBlock(nn.Module):
    def __init__(self, n_embd, n_head, block_size):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = _CausalSelfAttention(n_embd, n_head, block_size)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    """nanoGPT (Karpathy) in miniature: wte + wpe, pre-LN blocks, ln_f, lm_head tied to wte."""

    def __init__(self, vocab_size, block_size, n_embd, n_head, n_layer):
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList(_GPTBlock(n_embd, n_head, block_size) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying, as in nanoGPT

    def forward(self, idx):
        t = idx.size(1)
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def nanogpt(seed: int = 0):
    """nanoGPT-style GPT (E=32, H=4, L=2, 4E MLP, tied lm_head); input ids (B, T)."""
    c = CONFIG
    torch.manual_seed(seed)
    m = NanoGPT(c["V"], c["max_positions"], c["E"], c["H"], c["L"])
    return randomize_norms(m, seed), (_tokens(),), {}


# LLaMA-style blocks written by hand ----------------------------------------------------------------

class HandRMSNorm(nn.Module):
    """The usual hand-written RMSNorm: ``x * rsqrt(mean(x^2) + eps) * weight``."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryAttention(nn.Module):
    """LLaMA attention: q, k, v, o projections without bias, rotary embeddings on q and k
    (frequency i on coordinates i and i + d/2), causal F.scaled_dot_product_attention; with
    ``kv_heads`` < ``n_head`` grouped-query attention (key/value heads repeated with
    ``repeat_interleave``, kv head j serving query heads j g .. j g + g - 1)."""

    def __init__(self, dim, n_head, max_positions, base=10000.0, kv_heads=None):
        super().__init__()
        self.n_head = n_head
        self.kv_heads = kv_heads or n_head
        self.head_dim = dim // n_head
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dim, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        inv_freq = 1.0 / (base ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim))
        angles = torch.outer(torch.arange(max_positions).float(), inv_freq)
        emb = torch.cat((angles, angles), dim=-1)  # frequency i on coordinates i and i + d/2
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = self.cos[:T], self.sin[:T]
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if self.kv_heads != self.n_head:
            k = k.repeat_interleave(self.n_head // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.n_head // self.kv_heads, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))


class _LlamaBlock(nn.Module):
    def __init__(self, dim, n_head, hidden, max_positions, norm, kv_heads=None):
        super().__init__()
        self.attention_norm = norm(dim)
        self.attention = RotaryAttention(dim, n_head, max_positions, kv_heads=kv_heads)
        self.ffn_norm = norm(dim)
        self.w1 = nn.Linear(dim, hidden, bias=False)  # gate
        self.w3 = nn.Linear(dim, hidden, bias=False)  # up
        self.w2 = nn.Linear(hidden, dim, bias=False)  # down

    def forward(self, x):
        x = x + self.attention(self.attention_norm(x))
        h = self.ffn_norm(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


class LlamaBlocks(nn.Module):
    """Token embedding, LLaMA blocks (RMSNorm, rotary attention, SwiGLU), final norm, lm_head."""

    def __init__(self, vocab, dim, n_head, n_layer, hidden, max_positions, norm, kv_heads=None):
        super().__init__()
        self.tok_embeddings = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(_LlamaBlock(dim, n_head, hidden, max_positions, norm, kv_heads)
                                    for _ in range(n_layer))
        self.norm = norm(dim)
        self.output = nn.Linear(dim, vocab, bias=False)

    def forward(self, idx):
        x = self.tok_embeddings(idx)
        for layer in self.layers:
            x = layer(x)
        return self.output(self.norm(x))


def llama_blocks(norm: str = "hand", seed: int = 0, kv_heads: int | None = None):
    """LLaMA-style decoder (E=32, H=4, L=2, SwiGLU width I=64); ``norm`` is ``"hand"`` (the
    hand-written RMSNorm) or ``"module"`` (``nn.RMSNorm``, eps 1e-6); ``kv_heads`` key/value
    heads (grouped-query attention when fewer than H)."""
    c = CONFIG
    if norm == "hand":
        make = HandRMSNorm
    elif norm == "module":
        def make(dim):
            return nn.RMSNorm(dim, eps=1e-6)
    else:
        raise ValueError(f"Argument 'norm' must be 'hand' or 'module', not {norm!r}.")
    torch.manual_seed(seed)
    m = LlamaBlocks(c["V"], c["E"], c["H"], c["L"], c["I"], c["max_positions"], make, kv_heads)
    return randomize_norms(m, seed), (_tokens(),), {}


# Hugging Face models from tiny configs -----------------------------------------------------------

def hf_gpt2(seed: int = 0, tie: bool = True):
    """``GPT2LMHeadModel`` (lm_head tied to wte unless ``tie=False``, gelu_new MLP of 4E, sdpa
    causal attention)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = CONFIG
    cfg = GPT2Config(vocab_size=c["V"], n_positions=c["max_positions"], n_embd=c["E"], n_layer=c["L"], n_head=c["H"],
                     bos_token_id=0, eos_token_id=0, initializer_range=0.2, tie_word_embeddings=tie,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(seed)
    m = GPT2LMHeadModel(cfg)
    return randomize_norms(m, seed), (_tokens(),), {"use_cache": False}


def hf_bert(seed: int = 0):
    """``BertForSequenceClassification`` (post-LN, GELU MLP of I, pooler dense + tanh, 3 labels),
    with a padding mask (the second sequence has two padded positions)."""
    from transformers import BertConfig, BertForSequenceClassification

    c = CONFIG
    cfg = BertConfig(vocab_size=c["V"], hidden_size=c["E"], num_hidden_layers=c["L"], num_attention_heads=c["H"],
                     intermediate_size=c["I"], max_position_embeddings=c["max_positions"], type_vocab_size=2,
                     num_labels=3, initializer_range=0.2, pad_token_id=0,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    m = BertForSequenceClassification(cfg)
    mask = torch.ones(c["B"], c["T"], dtype=torch.long)
    mask[1, -2:] = 0
    return randomize_norms(m, seed), (_tokens(),), {"attention_mask": mask}


def hf_vit(seed: int = 0):
    """``ViTForImageClassification`` on 16x16x3 images, 4x4 patches (16 patches + CLS), 5 labels."""
    from transformers import ViTConfig, ViTForImageClassification

    c = CONFIG
    cfg = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=c["E"], num_hidden_layers=c["L"],
                    num_attention_heads=c["H"], intermediate_size=c["I"], num_labels=5, initializer_range=0.2,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    m = ViTForImageClassification(cfg)
    x = torch.randn(c["B"], 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return randomize_norms(m, seed), (x,), {}


def hf_llama(seed: int = 0, tie: bool = False, kv_heads: int | None = None):
    """``LlamaForCausalLM`` (RMSNorm with gain, rotary, SwiGLU of I, lm_head untied unless
    ``tie=True``; ``kv_heads`` key/value heads, grouped-query attention when fewer than H)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    c = CONFIG
    cfg = LlamaConfig(vocab_size=c["V"], hidden_size=c["E"], intermediate_size=c["I"], num_hidden_layers=c["L"],
                      num_attention_heads=c["H"], num_key_value_heads=kv_heads or c["H"], max_position_embeddings=c["max_positions"],
                      bos_token_id=0, eos_token_id=0, pad_token_id=0, initializer_range=0.2, tie_word_embeddings=tie)
    torch.manual_seed(seed)
    m = LlamaForCausalLM(cfg)
    return randomize_norms(m, seed), (_tokens(),), {"use_cache": False}


def hf_t5(seed: int = 0):
    """``T5ForConditionalGeneration`` (encoder-decoder, RMS layer norms with gain, relative position
    bias, ReLU feed-forward of I, embedding shared by encoder, decoder and the tied lm_head); input
    ids (B, T) and decoder input ids (B, 6)."""
    from transformers import T5Config, T5ForConditionalGeneration

    c = CONFIG
    cfg = T5Config(vocab_size=c["V"], d_model=c["E"], d_kv=c["E"] // c["H"], d_ff=c["I"], num_layers=c["L"],
                   num_decoder_layers=c["L"], num_heads=c["H"], relative_attention_num_buckets=8,
                   relative_attention_max_distance=16, dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0,
                   eos_token_id=1)
    torch.manual_seed(seed)
    m = T5ForConditionalGeneration(cfg)
    dec = torch.randint(2, c["V"], (c["B"], 6), generator=torch.Generator().manual_seed(2))
    return randomize_norms(m, seed), (_tokens(),), {"decoder_input_ids": dec, "use_cache": False}


# Odd cases of the issue -------------------------------------------------------------------------

class TiedHead(nn.Module):
    """emb -> Linear -> ReLU -> head, with ``head.weight = emb.weight``."""

    def __init__(self, vocab=20, dim=16, tie=True):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.fc = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        if tie:
            self.head.weight = self.emb.weight

    def forward(self, idx):
        return self.head(torch.relu(self.fc(self.emb(idx))))


def tied_head(tie: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    return TiedHead(tie=tie).eval(), (_tokens(vocab=20),), {}


class TiedDirect(nn.Module):
    """``head(emb(idx))`` with ``head.weight = emb.weight`` and nothing between: logits E E^T."""

    def __init__(self, vocab=20, dim=6):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, idx):
        return self.head(self.emb(idx))


def tied_direct(seed: int = 0):
    torch.manual_seed(seed)
    return TiedDirect().eval(), (_tokens(vocab=20),), {}


def _mlp3(seed: int, sizes=(6, 16, 16, 3)):
    torch.manual_seed(seed)
    a, b, c, d = sizes
    return nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, c), nn.Tanh(), nn.Linear(c, d))


def _x(seed=1, shape=(5, 6)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def weight_norm_mlp(seed: int = 0):
    """The middle Linear under ``torch.nn.utils.parametrizations.weight_norm``."""
    m = _mlp3(seed)
    torch.nn.utils.parametrizations.weight_norm(m[2])
    return m.eval(), (_x(),), {}


def spectral_norm_mlp(seed: int = 0):
    """The middle Linear under ``torch.nn.utils.parametrizations.spectral_norm`` (a few training
    forwards first, so that the power-iteration vectors are not at their initial values)."""
    m = _mlp3(seed)
    torch.nn.utils.parametrizations.spectral_norm(m[2])
    with torch.no_grad():
        for _ in range(3):
            m(_x())
    return m.eval(), (_x(),), {}


class _Symmetric(nn.Module):
    def forward(self, X):
        return X.triu() + X.triu(1).transpose(-1, -2)


def parametrized_mlp(seed: int = 0):
    """The middle (square) Linear made symmetric with ``torch.nn.utils.parametrize``."""
    m = _mlp3(seed)
    torch.nn.utils.parametrize.register_parametrization(m[2], "weight", _Symmetric())
    return m.eval(), (_x(),), {}


def pruned_mlp(seed: int = 0):
    """The middle Linear pruned with ``torch.nn.utils.prune.l1_unstructured`` (half the weights)."""
    import torch.nn.utils.prune as prune

    m = _mlp3(seed)
    prune.l1_unstructured(m[2], "weight", amount=0.5)
    return m.eval(), (_x(),), {}


class SlicedGate(nn.Module):
    """The issue's slicing example: ``h = a(x); b(gelu(h[..., :32]) * h[..., 32:])``."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(16, 64)
        self.b = nn.Linear(32, 8)

    def forward(self, x):
        h = self.a(x)
        return self.b(F.gelu(h[..., :32]) * h[..., 32:])


def sliced_gate(seed: int = 0):
    torch.manual_seed(seed)
    return SlicedGate().eval(), (_x(shape=(5, 16)),), {}


class SharedModule(nn.Module):
    """One Linear called twice: ``head(relu(mid(relu(mid(relu(fc(x)))))))``."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.mid = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.fc(x))
        h = torch.relu(self.mid(h))
        h = torch.relu(self.mid(h))
        return self.head(h)


def shared_module(seed: int = 0):
    torch.manual_seed(seed)
    return SharedModule().eval(), (_x(),), {}


def encoder_layer(seed: int = 0):
    """``nn.TransformerEncoderLayer(16, 2, 32, dropout=0, batch_first=True)`` fed by the input."""
    torch.manual_seed(seed)
    m = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
    return randomize_norms(m, seed), (_x(shape=(2, 5, 16)),), {}


class LSTMModel(nn.Module):
    """LSTM(8 -> 16) fed by the input, last time step, Linear(16 -> 4)."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def lstm_model(seed: int = 0):
    torch.manual_seed(seed)
    return LSTMModel().eval(), (_x(shape=(2, 5, 8)),), {}


class MHAModel(nn.Module):
    """``h = tanh(proj(x)); head(h + mha(h, h, h))`` with ``nn.MultiheadAttention(16, 2)``."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 16)
        self.mha = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.tanh(self.proj(x))
        a, _ = self.mha(h, h, h, need_weights=False)
        return self.head(h + a)


def multihead_attention(seed: int = 0):
    torch.manual_seed(seed)
    return MHAModel().eval(), (_x(shape=(2, 5, 6)),), {}


class _MixerBlock(nn.Module):
    def __init__(self, tokens, channels, token_hidden, channel_hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        self.token_fc1 = nn.Linear(tokens, token_hidden)
        self.token_fc2 = nn.Linear(token_hidden, tokens)
        self.norm2 = nn.LayerNorm(channels)
        self.channel_fc1 = nn.Linear(channels, channel_hidden)
        self.channel_fc2 = nn.Linear(channel_hidden, channels)

    def forward(self, x):  # (B, T, C)
        y = self.norm1(x).transpose(1, 2)                     # (B, C, T): Linear over the token axis
        x = x + self.token_fc2(F.gelu(self.token_fc1(y))).transpose(1, 2)
        return x + self.channel_fc2(F.gelu(self.channel_fc1(self.norm2(x))))


class MLPMixer(nn.Module):
    """MLP-Mixer in miniature: per-patch Linear(12 -> 16) over 9 patches, 2 blocks (token MLP
    9 -> 12 -> 9, channel MLP 16 -> 24 -> 16), final LN, mean over tokens, Linear(16 -> 4)."""

    def __init__(self, patch_dim=12, tokens=9, channels=16, token_hidden=12, channel_hidden=24, depth=2, classes=4):
        super().__init__()
        self.stem = nn.Linear(patch_dim, channels)
        self.blocks = nn.ModuleList(_MixerBlock(tokens, channels, token_hidden, channel_hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(channels)
        self.head = nn.Linear(channels, classes)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x).mean(dim=1))


def mlp_mixer(seed: int = 0):
    torch.manual_seed(seed)
    return randomize_norms(MLPMixer(), seed), (_x(shape=(2, 9, 12)),), {}


class GroupedConvNet(nn.Module):
    """conv(3->8) - GroupNorm(2, 8) - ReLU - conv(8->8, groups=2) - ReLU - depthwise conv(8->8,
    groups=8) - ReLU - global average pool - Linear(8 -> 4)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.gn(self.conv1(x)))
        x = torch.relu(self.grouped(x))
        x = torch.relu(self.depthwise(x))
        return self.fc(x.mean(dim=(2, 3)))


def grouped_conv_groupnorm(seed: int = 0):
    torch.manual_seed(seed)
    return randomize_norms(GroupedConvNet(), seed), (_x(shape=(2, 3, 6, 6)),), {}


def prelu_mlp(seed: int = 0):
    """Linear(6 -> 8) - PReLU(8) (per-channel slopes in [0.1, 0.5)) - Linear(8 -> 3)."""
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(6, 8), nn.PReLU(8), nn.Linear(8, 3))
    with torch.no_grad():
        m[1].weight.copy_(0.1 + 0.4 * torch.rand(8, generator=torch.Generator().manual_seed(seed)))
    return m.eval(), (_x(),), {}


def conv_transpose(seed: int = 0):
    """ConvTranspose2d(3 -> 8, 2, stride 2) - ReLU - Conv2d(8 -> 4, 3)."""
    torch.manual_seed(seed)
    m = nn.Sequential(nn.ConvTranspose2d(3, 8, 2, stride=2), nn.ReLU(), nn.Conv2d(8, 4, 3))
    return m.eval(), (_x(shape=(2, 3, 4, 4)),), {}


TRANSFORMERS = {
    "nanogpt": nanogpt,
    "llama_hand": llama_blocks,
    "llama_rmsnorm_module": lambda seed=0: llama_blocks("module", seed),
    "hf_gpt2": hf_gpt2,
    "hf_bert": hf_bert,
    "hf_vit": hf_vit,
    "hf_llama": hf_llama,
    "hf_gpt2_untied": lambda seed=0: hf_gpt2(seed, tie=False),
    "hf_llama_tied": lambda seed=0: hf_llama(seed, tie=True),
    "llama_gqa_hand": lambda seed=0: llama_blocks("hand", seed, kv_heads=2),
}

ODD_CASES = {
    "tied_head": tied_head,
    "untied_head": lambda seed=0: tied_head(False, seed),
    "tied_direct": tied_direct,
    "weight_norm": weight_norm_mlp,
    "spectral_norm": spectral_norm_mlp,
    "parametrize": parametrized_mlp,
    "pruning": pruned_mlp,
    "sliced_gate": sliced_gate,
    "shared_module": shared_module,
    "encoder_layer": encoder_layer,
    "lstm": lstm_model,
    "multihead_attention": multihead_attention,
    "mlp_mixer": mlp_mixer,
    "grouped_conv_groupnorm": grouped_conv_groupnorm,
    "prelu": prelu_mlp,
    "conv_transpose": conv_transpose,
    "hf_llama_gqa": lambda seed=0: hf_llama(seed, kv_heads=2),
    "hf_t5": hf_t5,
}
