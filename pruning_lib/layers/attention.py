"""Attention layers with heads as a pruning unit: ``nn.MultiheadAttention`` and torchvision's MaxViT
and Swin (V1, V2) attentions. Head j is its rows of q, k and v and the matching columns of the output
projection (the head dimension is kept); after a cut each module becomes a ``HeadPruned...`` subclass
whose forward works at the kept head count. The head-pruned classes say ``pruning_lib.layers`` as their
module, so pickles name them there."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import ATTENTION, LayerHandler, _fresh, _keep, _param
from .standard import LINEAR as _LINEAR

__all__ = ["HeadPrunedMultiheadAttention", "MultiheadAttentionHandler", "torchvision_attention"]

class HeadPrunedMultiheadAttention(nn.MultiheadAttention):
    """An ``nn.MultiheadAttention`` after surgery: ``num_heads`` heads of the kept ``head_dim``, so its
    q, k, v projections map the (possibly narrower) input to ``num_heads * head_dim`` features and
    ``out_proj`` maps those back (``nn.MultiheadAttention`` itself needs num_heads * head_dim =
    embed_dim). The same call signature and results as the original minus the removed heads."""

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        h, d = self.num_heads, self.head_dim
        w = self.in_proj_weight.chunk(3)
        b = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        q, k, v = (F.linear(t, w[i], b[i]).unflatten(-1, (h, d)).transpose(1, 2)
                   for i, t in enumerate((query, key, value)))
        bias = None                                     # the masks as one additive bias
        for mask in (attn_mask, None if key_padding_mask is None else key_padding_mask[:, None, None, :]):
            if mask is None:
                continue
            if attn_mask is mask and mask.dim() != 2:
                raise ValueError("a pruned attention takes a 2-D attn_mask (one for every head), got shape "
                                 f"{tuple(mask.shape)}: per-head masks would name heads that were removed")
            add = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(mask, float("-inf")) \
                if mask.dtype == torch.bool else mask.to(q.dtype)
            bias = add if bias is None else bias + add
        p = self.dropout if self.training else 0.0
        if not need_weights:
            attn = None
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p,
                                                 is_causal=is_causal and bias is None)
        else:
            scores = q @ k.transpose(-2, -1) / math.sqrt(d)
            if bias is None and is_causal:
                bias = torch.zeros(scores.shape[-2:], dtype=q.dtype, device=q.device).masked_fill(
                    torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).triu(1), float("-inf"))
            attn = F.dropout((scores if bias is None else scores + bias).softmax(-1), p, self.training)
            ctx = attn @ v
        out = self.out_proj(ctx.transpose(1, 2).flatten(2))
        if not self.batch_first:
            out = out.transpose(0, 1)
        weights = (attn.mean(1) if average_attn_weights else attn) if need_weights else None
        return out, weights



def _head_l1(qkv_weight: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    """The L1 norm of each head's q, k and v rows of a packed (3 * heads * head_dim, C) weight."""
    return qkv_weight.detach().abs().to("cpu", torch.float64).view(3, heads, head_dim, -1).sum((0, 2, 3))


def _head_cols(heads, head_dim: int) -> list[int]:
    """The input columns of the output projection that read ``heads``."""
    return [j * head_dim + t for j in heads for t in range(head_dim)]

class MultiheadAttentionHandler(LayerHandler):
    """An ``nn.MultiheadAttention`` (packed q, k, v: kdim = vdim = embed_dim, no bias_k/v, no zero
    attention) in self-attention: like a Linear it reads its input channels (columns of in_proj)
    and writes its output channels (rows of out_proj); its heads are a pruning unit of their own:
    head j is rows [j*d, (j+1)*d) of q, k and v and the same columns of out_proj (the head
    dimension d is kept). After a cut it becomes a :class:`HeadPrunedMultiheadAttention`."""
    kind, role, axis = "attention", ATTENTION, -1
    tensors = ("in_proj_weight", "in_proj_bias")
    owns_children = True                   # out_proj is shrunk (and counted) with the attention

    def unsupported(self, m) -> str:
        """Why this attention's channels and heads cannot be cut ('' when they can)."""
        if not m._qkv_same_embed_dim:
            return "separate kdim/vdim projections"
        if m.bias_k is not None or m.add_zero_attn:
            return "add_bias_kv / add_zero_attn"
        return ""

    def heads(self, m) -> int:
        return m.num_heads

    def sizes(self, m):
        return m.in_proj_weight.shape[1], m.out_proj.out_features

    def out_weight(self, m) -> torch.Tensor:
        """The weight whose rows are the output channels (for the L1 criterion)."""
        return m.out_proj.weight

    def in_weight(self, m) -> torch.Tensor:
        """The weight whose columns are the input channels (q, k and v read them)."""
        return m.in_proj_weight

    def head_weights(self, m) -> torch.Tensor:
        """|q, k, v rows| summed per head: shape (num_heads,), the heads' L1 norms."""
        return _head_l1(m.in_proj_weight, m.num_heads, m.head_dim)

    def head_columns(self, m, heads) -> tuple[torch.Tensor, list[int]]:
        """The weight reading the heads (out_proj) and its columns holding ``heads``."""
        return m.out_proj.weight, _head_cols(heads, m.head_dim)

    def shrink(self, m, out_drop, in_drop, heads=frozenset()):
        n, d = m.num_heads, m.head_dim
        kept = [j for j in range(n) if j not in heads]
        dev = m.in_proj_weight.device
        rows = torch.tensor([i * n * d + j * d + t for i in range(3) for j in kept for t in range(d)],
                            dtype=torch.long, device=dev)
        cols = rows[:len(kept) * d]
        keep_in = _keep(m.in_proj_weight.shape[1], in_drop, dev)
        keep_out = _keep(m.out_proj.out_features, out_drop, dev)
        m.in_proj_weight = _param(m.in_proj_weight.data.index_select(0, rows).index_select(1, keep_in),
                                  m.in_proj_weight)
        if m.in_proj_bias is not None:
            m.in_proj_bias = _param(m.in_proj_bias.data.index_select(0, rows), m.in_proj_bias)
        o = m.out_proj
        o.weight = _param(o.weight.data.index_select(0, keep_out).index_select(1, cols), o.weight)
        if o.bias is not None:
            o.bias = _param(o.bias.data.index_select(0, keep_out), o.bias)
        o.out_features, o.in_features = len(keep_out), len(kept) * d
        m.num_heads, m.embed_dim = len(kept), len(keep_in)
        m.kdim = m.vdim = len(keep_in)
        if type(m) is nn.MultiheadAttention:
            m.__class__ = HeadPrunedMultiheadAttention

    def parameters_after(self, m, n_out, n_in, n_heads=0):
        e_in, e_out = self.sizes(m)
        inner = (m.num_heads - n_heads) * m.head_dim
        bias = m.in_proj_bias is not None
        return (3 * inner * (e_in - n_in) + (3 * inner if bias else 0)
                + (e_out - n_out) * inner + ((e_out - n_out) if m.out_proj.bias is not None else 0))

    def resize(self, m, state, prefix):
        w = state.get(prefix + "in_proj_weight")
        wo = state.get(prefix + "out_proj.weight")
        if w is None or wo is None or (w.shape == m.in_proj_weight.shape and wo.shape == m.out_proj.weight.shape):
            return
        inner, e_in = w.shape[0] // 3, w.shape[1]
        m.num_heads, m.embed_dim, m.kdim, m.vdim = inner // m.head_dim, e_in, e_in, e_in
        m.in_proj_weight = _fresh(w.shape, m.in_proj_weight)
        if m.in_proj_bias is not None:
            m.in_proj_bias = _fresh((w.shape[0],), m.in_proj_bias)
        o = m.out_proj
        o.out_features, o.in_features = wo.shape
        o.weight = _fresh(wo.shape, o.weight)
        if o.bias is not None:
            o.bias = _fresh((wo.shape[0],), o.bias)
        if type(m) is nn.MultiheadAttention:
            m.__class__ = HeadPrunedMultiheadAttention


class _RelativeAttentionHandler(LayerHandler):
    """torchvision's MaxViT ``RelativePositionalMultiHeadAttention`` (x: (B, G, P, D)): it reads its
    input channels (columns of ``to_qkv``), writes its output channels (rows of ``merge``), and its
    heads are a unit: head j is rows [j*d, (j+1)*d) of q, k and v in ``to_qkv``, the same columns of
    ``merge`` and column j of ``relative_position_bias_table``. After a cut its forward is
    :class:`HeadPrunedRelativeAttention`'s (the original reshapes to the input width D)."""
    kind, role, axis = "attention", ATTENTION, -1
    tensors = ()
    owns_children = True

    def unsupported(self, m) -> str:
        return ""

    def heads(self, m) -> int:
        return m.n_heads

    def sizes(self, m):
        return m.to_qkv.in_features, m.merge.out_features

    def out_weight(self, m) -> torch.Tensor:
        return m.merge.weight

    def in_weight(self, m) -> torch.Tensor:
        return m.to_qkv.weight

    def head_weights(self, m) -> torch.Tensor:
        return _head_l1(m.to_qkv.weight, m.n_heads, m.head_dim)

    def head_columns(self, m, heads) -> tuple[torch.Tensor, list[int]]:
        return m.merge.weight, _head_cols(heads, m.head_dim)

    def shrink(self, m, out_drop, in_drop, heads=frozenset()):
        n, d = m.n_heads, m.head_dim
        kept = [j for j in range(n) if j not in heads]
        rows = {i * n * d + j * d + t for i in range(3) for j in range(n) for t in range(d)} - \
            {i * n * d + j * d + t for i in range(3) for j in kept for t in range(d)}
        _LINEAR.shrink(m.to_qkv, rows, in_drop)
        _LINEAR.shrink(m.merge, out_drop, {j * d + t for j in heads for t in range(d)})
        table = m.relative_position_bias_table
        m.relative_position_bias_table = _param(table.data.index_select(1, _keep(n, set(heads), table.device)), table)
        m.n_heads = len(kept)
        if type(m).__name__ == "RelativePositionalMultiHeadAttention":
            m.__class__ = _head_pruned_relative_attention()

    def parameters_after(self, m, n_out, n_in, n_heads=0):
        inner = (m.n_heads - n_heads) * m.head_dim
        e_in, e_out = self.sizes(m)
        return (3 * inner * (e_in - n_in) + 3 * inner + (e_out - n_out) * inner + (e_out - n_out)
                + m.relative_position_bias_table.shape[0] * (m.n_heads - n_heads))

    def resize(self, m, state, prefix):
        w = state.get(prefix + "to_qkv.weight")
        if w is None or w.shape == m.to_qkv.weight.shape and state[prefix + "merge.weight"].shape == m.merge.weight.shape:
            return
        _LINEAR.resize(m.to_qkv, state, prefix + "to_qkv.")
        _LINEAR.resize(m.merge, state, prefix + "merge.")
        t = state[prefix + "relative_position_bias_table"]
        m.relative_position_bias_table = _fresh(t.shape, m.relative_position_bias_table)
        m.n_heads = t.shape[1]
        if type(m).__name__ == "RelativePositionalMultiHeadAttention":
            m.__class__ = _head_pruned_relative_attention()


def _head_pruned_relative_attention() -> type:
    """HeadPrunedRelativeAttention (made by :func:`torchvision_attention`)."""
    return globals()["HeadPrunedRelativeAttention"]


class _WindowAttentionHandler(LayerHandler):
    """torchvision's Swin ``ShiftedWindowAttention`` and ``ShiftedWindowAttentionV2`` (x: (B, H, W, C),
    channels last): it reads its input channels (columns of ``qkv``), writes its output channels
    (rows of ``proj``), and its heads are a unit: head j is rows [j*d, (j+1)*d) of q, k and v in
    ``qkv`` (weight and bias), the same columns of ``proj``, and its relative position bias (V1:
    column j of ``relative_position_bias_table``; V2: ``logit_scale[j]`` and row j of ``cpb_mlp``'s
    last Linear). After a cut its forward is :class:`HeadPrunedWindowAttention`'s (the original takes
    the head width from the input width C)."""
    kind, role, axis = "attention", ATTENTION, -1
    tensors = ()
    owns_children = True

    def unsupported(self, m) -> str:
        if type(m) not in _WINDOW_ATTENTION_PRUNED and type(m) not in _WINDOW_ATTENTION_PRUNED.values():
            return (f"{type(m).__name__} subclasses torchvision's {type(m).__mro__[1].__name__}, whose forward "
                    "after a cut is not known here; register_handler a handler for it")
        inner = m.num_heads * self.head_dim(m)
        if m.qkv.out_features != 3 * inner or m.proj.in_features != inner:
            return (f"qkv ({m.qkv.out_features} outputs) and proj ({m.proj.in_features} inputs) do not hold "
                    f"{m.num_heads} heads of one width")
        return ""

    def heads(self, m) -> int:
        return m.num_heads

    def head_dim(self, m) -> int:
        return m.qkv.out_features // (3 * m.num_heads)

    def sizes(self, m):
        return m.qkv.in_features, m.proj.out_features

    def out_weight(self, m) -> torch.Tensor:
        return m.proj.weight

    def in_weight(self, m) -> torch.Tensor:
        return m.qkv.weight

    def head_weights(self, m) -> torch.Tensor:
        return _head_l1(m.qkv.weight, m.num_heads, self.head_dim(m))

    def head_columns(self, m, heads) -> tuple[torch.Tensor, list[int]]:
        return m.proj.weight, _head_cols(heads, self.head_dim(m))

    @staticmethod
    def _bias_mlp_out(m) -> nn.Linear | None:
        """V2's Linear writing one relative position bias per head (the last of ``cpb_mlp``)."""
        mlp = getattr(m, "cpb_mlp", None)
        return None if mlp is None else [c for c in mlp.modules() if isinstance(c, nn.Linear)][-1]

    def shrink(self, m, out_drop, in_drop, heads=frozenset()):
        n, d = m.num_heads, self.head_dim(m)
        heads = set(heads)
        rows = {i * n * d + j * d + t for i in range(3) for j in heads for t in range(d)}
        _LINEAR.shrink(m.qkv, rows, in_drop)
        _LINEAR.shrink(m.proj, out_drop, set(_head_cols(heads, d)))
        if heads:
            table = getattr(m, "relative_position_bias_table", None)
            if isinstance(table, torch.Tensor):
                kept = _keep(n, heads, table.device)
                m.relative_position_bias_table = _param(table.data.index_select(1, kept), table)
            scale = getattr(m, "logit_scale", None)
            if isinstance(scale, torch.Tensor):
                m.logit_scale = _param(scale.data.index_select(0, _keep(n, heads, scale.device)), scale)
            last = self._bias_mlp_out(m)
            if last is not None:
                _LINEAR.shrink(last, heads, set())
        m.num_heads = n - len(heads)
        _to_head_pruned_window_attention(m)

    def parameters_after(self, m, n_out, n_in, n_heads=0):
        kept = m.num_heads - n_heads
        inner = kept * self.head_dim(m)
        e_in, e_out = self.sizes(m)
        total = (3 * inner * (e_in - n_in) + (3 * inner if m.qkv.bias is not None else 0)
                 + (e_out - n_out) * inner + ((e_out - n_out) if m.proj.bias is not None else 0))
        table = getattr(m, "relative_position_bias_table", None)
        if isinstance(table, nn.Parameter):
            total += table.shape[0] * kept
        if isinstance(getattr(m, "logit_scale", None), nn.Parameter):
            total += kept
        mlp = getattr(m, "cpb_mlp", None)
        if mlp is not None:
            last = self._bias_mlp_out(m)
            total += sum(p.numel() for p in mlp.parameters()) - sum(p.numel() for p in last.parameters())
            total += _LINEAR.parameters_after(last, n_heads, 0)
        return total

    def resize(self, m, state, prefix):
        w, wo = state.get(prefix + "qkv.weight"), state.get(prefix + "proj.weight")
        if w is None or wo is None or (w.shape == m.qkv.weight.shape and wo.shape == m.proj.weight.shape):
            return
        d = self.head_dim(m)
        _LINEAR.resize(m.qkv, state, prefix + "qkv.")
        _LINEAR.resize(m.proj, state, prefix + "proj.")
        m.num_heads = w.shape[0] // (3 * d)
        for name in ("relative_position_bias_table", "logit_scale"):
            t = state.get(prefix + name)
            if t is not None and isinstance(getattr(m, name, None), torch.Tensor):
                setattr(m, name, _fresh(t.shape, getattr(m, name)))
        last = self._bias_mlp_out(m)
        if last is not None:
            path = next(n for n, c in m.cpb_mlp.named_modules() if c is last)
            _LINEAR.resize(last, state, f"{prefix}cpb_mlp.{path}.")
        _to_head_pruned_window_attention(m)


class _WindowAttentionForward:
    """The forward of a Swin window attention (V1, and V2 when the module has a ``logit_scale``) of
    ``num_heads`` heads of the width kept in ``qkv``, whatever the input width: pad to whole windows,
    shift cyclically, attend within each window (relative position bias, a mask between the
    regions a shift brought together), project, and undo the windows, the shift and the padding
    (Liu et al. 2021, Swin Transformer; V2's scaled cosine attention: Liu et al. 2022)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        wh, ww = self.window_size
        x = F.pad(x, (0, 0, 0, -w % ww, 0, -h % wh))
        ph, pw = x.shape[1], x.shape[2]
        shift = [0 if size <= win else s for s, win, size in zip(self.shift_size, self.window_size, (ph, pw))]
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        nh, nw = ph // wh, pw // ww
        win = x.view(b, nh, wh, nw, ww, x.shape[-1]).permute(0, 1, 3, 2, 4, 5).reshape(b * nh * nw, wh * ww, -1)
        tokens = wh * ww
        heads = self.num_heads
        d = self.qkv.out_features // (3 * heads)
        cosine = getattr(self, "logit_scale", None) is not None
        bias = self.qkv.bias
        if cosine and bias is not None:                 # V2 learns no bias for the keys
            bias = torch.cat([bias[:heads * d], torch.zeros_like(bias[heads * d:2 * heads * d]), bias[2 * heads * d:]])
        q, k, v = F.linear(win, self.qkv.weight, bias).reshape(len(win), tokens, 3, heads, d).permute(2, 0, 3, 1, 4)
        if cosine:
            attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
            attn = attn * torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        else:
            attn = (q * d ** -0.5) @ k.transpose(-2, -1)
        attn = attn + self.get_relative_position_bias()
        if sum(shift) > 0:
            mask = _shift_mask(ph, pw, self.window_size, shift, x)
            attn = (attn.view(b, nh * nw, heads, tokens, tokens) + mask[None, :, None]).view(-1, heads, tokens, tokens)
        attn = F.dropout(attn.softmax(-1), p=self.attention_dropout, training=self.training)
        y = F.dropout(self.proj((attn @ v).transpose(1, 2).reshape(len(win), tokens, heads * d)),
                      p=self.dropout, training=self.training)
        y = y.view(b, nh, nw, wh, ww, y.shape[-1]).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, -1)
        if sum(shift) > 0:
            y = torch.roll(y, shifts=(shift[0], shift[1]), dims=(1, 2))
        return y[:, :h, :w, :].contiguous()


def _shift_mask(ph: int, pw: int, window, shift, like: torch.Tensor) -> torch.Tensor:
    """(windows, P, P): 0 between two tokens of a window that came from the same region of the
    padded (ph, pw) map before the cyclic shift, -100 between tokens that the shift brought together."""
    def band(size, win, s):                              # 0, 1, 2: the three bands a shift makes on one axis
        i = torch.arange(size, device=like.device)
        return (i >= size - win).long() + (i >= size - s).long() if s else torch.zeros_like(i)

    region = (3 * band(ph, window[0], shift[0])[:, None] + band(pw, window[1], shift[1])[None, :]).to(like.dtype)
    wh, ww = window
    per_window = region.view(ph // wh, wh, pw // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)
    diff = per_window[:, None, :] - per_window[:, :, None]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


# torchvision's Swin attention classes -> their head-pruned subclasses (filled by _register_swin)
_WINDOW_ATTENTION_PRUNED: dict[type, type] = {}


def _to_head_pruned_window_attention(m: nn.Module) -> None:
    """Give a cut Swin attention the forward that takes its head width from ``qkv``."""
    if type(m) in _WINDOW_ATTENTION_PRUNED:
        m.__class__ = _WINDOW_ATTENTION_PRUNED[type(m)]


PUBLIC_MODULE = "pruning_lib.layers"             # where the head-pruned classes are found (and pickled)
HeadPrunedMultiheadAttention.__module__ = PUBLIC_MODULE


def _relative_attention_class(base: type) -> type:
    """HeadPrunedRelativeAttention: MaxViT's attention whose forward reshapes to ``n_heads * head_dim``
    (the original reshapes to the input width, equal only before a cut)."""

    class HeadPrunedRelativeAttention(base):
        """torchvision's RelativePositionalMultiHeadAttention after surgery: its forward reshapes to
        ``n_heads * head_dim`` (the original reshapes to the input width, equal only before a cut)."""

        def forward(self, x):
            b, g, p, _ = x.shape
            h, dh = self.n_heads, self.head_dim
            q, k, v = (t.reshape(b, g, p, h, dh).permute(0, 1, 3, 2, 4)
                       for t in torch.chunk(self.to_qkv(x), 3, dim=-1))
            k = k * self.scale_factor
            dot = F.softmax(q @ k.transpose(-2, -1) + self.get_relative_positional_bias(), dim=-1)
            return self.merge((dot @ v).permute(0, 1, 3, 2, 4).reshape(b, g, p, h * dh))

    HeadPrunedRelativeAttention.__module__ = PUBLIC_MODULE
    HeadPrunedRelativeAttention.__qualname__ = "HeadPrunedRelativeAttention"
    return HeadPrunedRelativeAttention


def _window_attention_class(base: type, name: str) -> type:
    """A head-pruned Swin window attention class over ``base`` (V1 or V2)."""
    return type(name, (_WindowAttentionForward, base), {
        "__doc__": f"torchvision's {base.__name__} after surgery: ``num_heads`` heads of the width kept "
                   "in ``qkv`` (the original takes the head width from the input width, equal only "
                   "before a cut); the same function otherwise.",
        "__module__": PUBLIC_MODULE, "__qualname__": name})


def torchvision_attention() -> tuple[dict[type, LayerHandler], dict[str, type]]:
    """torchvision's attention blocks with heads as a unit: (layer type -> handler, name -> the
    head-pruned class), made once; the package registers the handlers (traced as leaves)."""
    if _MADE:
        return _MADE["handlers"], _MADE["classes"]
    from torchvision.models.maxvit import RelativePositionalMultiHeadAttention
    from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2
    classes = {"HeadPrunedRelativeAttention": _relative_attention_class(RelativePositionalMultiHeadAttention)}
    for base, name in ((ShiftedWindowAttention, "HeadPrunedWindowAttention"),
                       (ShiftedWindowAttentionV2, "HeadPrunedWindowAttentionV2")):
        classes[name] = _WINDOW_ATTENTION_PRUNED[base] = _window_attention_class(base, name)
    globals().update(classes)
    window = _WindowAttentionHandler()
    handlers = {RelativePositionalMultiHeadAttention: _RelativeAttentionHandler(),
                ShiftedWindowAttention: window, ShiftedWindowAttentionV2: window}
    _MADE.update(handlers=handlers, classes=classes)
    return handlers, classes


_MADE: dict = {}
