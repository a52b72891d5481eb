"""How each ATen operation ties or freezes the dimensions of its inputs and outputs.

A rule receives the dimension classes (`g`), the operation's arguments bound to their schema names
(`p`), its tensor inputs and its tensor outputs. An operation without a rule freezes every dimension
it touches, so an operation the analysis does not know can only make it prune less, never wrongly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Rule = Callable[[Any, dict, list, list], None]
RULES: dict[str, Rule] = {}


def rule(*names: str):
    def register(fn: Rule) -> Rule:
        for name in names:
            RULES[name] = fn
        return fn

    return register


def _norm(dim: int, rank: int) -> int:
    return dim + rank if dim < 0 else dim


def broadcast(g, inputs: list, out) -> None:
    """Tie each input dimension to the output dimension it broadcasts to (sizes of 1 tie nothing)."""
    od = g.dims(out)
    for t in inputs:
        td = g.dims(t)
        offset = out.dim() - t.dim()
        for i in range(t.dim()):
            j = i + offset
            if j >= 0 and t.shape[i] == out.shape[j] and t.shape[i] != 1:
                g.tie(td[i], od[j])


def same_shape(g, x, out, skip: set[int] = frozenset()) -> None:
    xd, od = g.dims(x), g.dims(out)
    for i in range(min(x.dim(), out.dim())):
        if i not in skip and x.shape[i] == out.shape[i]:
            g.tie(xd[i], od[i])


POINTWISE = """abs acos add addcdiv addcmul alias asin atan atan2 bitwise_and bitwise_not bitwise_or
bitwise_xor ceil celu clamp clamp_max clamp_min clip clone contiguous copy cos cosh detach div elu eq erf erfc
exp exp2 expm1 fill floor fmod frac ge gelu gt hardsigmoid hardswish hardtanh isinf isnan le
leaky_relu lerp lift_fresh lift_fresh_copy log log10 log1p log2 logical_and logical_not logical_or
logical_xor lt masked_fill maximum minimum mish mul nan_to_num ne neg pow prelu reciprocal relu
relu6 remainder round rsqrt rsub selu sigmoid sign silu sin sinh softplus sqrt square sub tan tanh
threshold to _to_copy trunc type_as where xlogy zero dropout native_dropout feature_dropout
alpha_dropout ones_like zeros_like empty_like full_like rand_like randn_like
_assert_tensor_metadata""".split()  # noqa: SIM905 (a word list reads better as text)


@rule(*POINTWISE)
def pointwise(g, p, inputs, outs) -> None:
    for out in outs[:1]:  # native_dropout's mask is the second output: same shape
        broadcast(g, inputs, out)
    for extra in outs[1:]:
        if extra.shape == outs[0].shape:
            same_shape(g, outs[0], extra)


@rule("view", "_unsafe_view", "reshape", "_reshape_alias", "view_as", "flatten", "unflatten", "squeeze")
@rule("unsqueeze", "view_copy", "reshape_as")
def reshape(g, p, inputs, outs) -> None:
    from compress.passes.prune.dims import align

    x, out = inputs[0], outs[0]
    xd, od = g.dims(x), g.dims(out)
    xs = [(i, s) for i, s in enumerate(x.shape) if s != 1]
    ys = [(j, s) for j, s in enumerate(out.shape) if s != 1]
    groups = align([s for _, s in xs], [s for _, s in ys])
    if groups is None:
        g.freeze_all([x, out], "an unusual reshape")
        return
    for (i0, i1), (j0, j1) in groups:
        ins = [xd[i] for i, _ in xs[i0:i1]]
        outs_ = [od[j] for j, _ in ys[j0:j1]]
        merged = g.classes.product(ins)
        for part, c in zip(g.classes.split(merged, [s for _, s in ys[j0:j1]]), outs_, strict=True):
            g.tie(part, c)


@rule("expand", "expand_as", "broadcast_to", "expand_copy")
def expand(g, p, inputs, outs) -> None:
    broadcast(g, inputs[:1], outs[0])


@rule("permute", "transpose", "t", "permute_copy", "transpose_copy")
def permute(g, p, inputs, outs) -> None:
    x, out = inputs[0], outs[0]
    rank = x.dim()
    order = list(range(rank))
    if "dims" in p and p["dims"] is not None:
        order = [_norm(d, rank) for d in p["dims"]]
    elif "dim0" in p:
        a, b = _norm(p["dim0"], rank), _norm(p["dim1"], rank)
        order[a], order[b] = order[b], order[a]
    elif rank == 2:  # t()
        order = [1, 0]
    xd, od = g.dims(x), g.dims(out)
    for j, i in enumerate(order):
        g.tie(xd[i], od[j])


def _along(g, x, outs, dim: int, reason: str) -> None:
    """Outputs that cut or index `x` along `dim`: that dimension is frozen, the others tie."""
    d = _norm(dim, x.dim())
    g.classes.freeze(g.dims(x)[d], reason)
    for out in outs:
        if out.dim() == x.dim():
            same_shape(g, x, out, skip={d})
            g.classes.freeze(g.dims(out)[d], reason)
        elif out.dim() == x.dim() - 1:  # the dimension was removed (select, unbind)
            xd, od = g.dims(x), g.dims(out)
            for j, i in enumerate(i for i in range(x.dim()) if i != d):
                g.tie(xd[i], od[j])


@rule("slice", "narrow", "slice_copy")
def slice_(g, p, inputs, outs) -> None:
    x, out = inputs[0], outs[0]
    d = _norm(p.get("dim", 0), x.dim())
    if out.shape == x.shape:
        same_shape(g, x, out)
    else:
        _along(g, x, outs, d, "sliced")


@rule(
    "select", "split", "split_with_sizes", "chunk", "unbind", "tensor_split", "index_select", "unsafe_split"
)
def cut(g, p, inputs, outs) -> None:
    _along(g, inputs[0], outs, p.get("dim", 0) or 0, "split or indexed")


@rule("cat", "concat")
def cat(g, p, inputs, outs) -> None:
    out = outs[0]
    d = _norm(p.get("dim", 0), out.dim())
    g.classes.freeze(g.dims(out)[d], "concatenated")
    for t in inputs:
        if t.dim() == out.dim():
            _along(g, t, [out], d, "concatenated")


@rule("stack")
def stack(g, p, inputs, outs) -> None:
    out = outs[0]
    d = _norm(p.get("dim", 0), out.dim())
    od = g.dims(out)
    g.classes.freeze(od[d], "stacked")
    for t in inputs:
        td = g.dims(t)
        for i in range(t.dim()):
            g.tie(td[i], od[i if i < d else i + 1])


@rule("linear")
def linear(g, p, inputs, outs) -> None:
    x, w, b, out = p["input"], p["weight"], p.get("bias"), outs[0]
    xd, wd, od = g.dims(x), g.dims(w), g.dims(out)
    g.tie(xd[-1], wd[1])
    g.tie(od[-1], wd[0])
    if b is not None:
        g.tie(g.dims(b)[0], wd[0])
    for i in range(x.dim() - 1):
        g.tie(xd[i], od[i])


def _matmul(g, a, b, out) -> None:
    """a[..., n, k] @ b[..., k, m] -> out[..., n, m], batch dimensions broadcast."""
    if a.dim() < 2 or b.dim() < 2:
        g.freeze_all([a, b, out], "a matrix-vector product")
        return
    ad, bd, od = g.dims(a), g.dims(b), g.dims(out)
    g.tie(ad[-1], bd[-2])
    g.tie(ad[-2], od[-2])
    g.tie(bd[-1], od[-1])
    for t, td in ((a, ad), (b, bd)):
        offset = out.dim() - t.dim()
        for i in range(t.dim() - 2):
            if t.shape[i] == out.shape[i + offset] and t.shape[i] != 1:
                g.tie(td[i], od[i + offset])


@rule("mm", "bmm", "matmul")
def matmul(g, p, inputs, outs) -> None:
    _matmul(g, inputs[0], inputs[1], outs[0])


@rule("addmm", "baddbmm")
def addmm(g, p, inputs, outs) -> None:
    _matmul(
        g, p["batch1"] if "batch1" in p else p["mat1"], p["batch2"] if "batch2" in p else p["mat2"], outs[0]
    )
    broadcast(g, [p["self"]], outs[0])


@rule("conv1d", "conv2d", "conv3d", "convolution", "_convolution")
def conv(g, p, inputs, outs) -> None:
    x, w, b, out = p["input"], p["weight"], p.get("bias"), outs[0]
    if p.get("transposed") or p.get("groups", 1) != 1 or x.dim() != w.dim():
        g.freeze_all([x, w, out], "a grouped or transposed convolution")
        return
    xd, wd, od = g.dims(x), g.dims(w), g.dims(out)
    g.tie(xd[0], od[0])
    g.tie(xd[1], wd[1])
    g.tie(od[1], wd[0])
    for i in range(2, w.dim()):
        g.classes.freeze(wd[i], "a convolution kernel's extent")
    if b is not None:
        g.tie(g.dims(b)[0], wd[0])


@rule("layer_norm", "native_layer_norm", "rms_norm", "_fused_rms_norm")
def layer_norm(g, p, inputs, outs) -> None:
    x, out = p["input"], outs[0]
    k = len(p["normalized_shape"])
    same_shape(g, x, out)
    for t in (p.get("weight"), p.get("bias")):
        if t is not None:
            for i in range(k):
                g.tie(g.dims(t)[i], g.dims(x)[x.dim() - k + i])
    for i in range(x.dim() - k, x.dim()):
        g.classes.freeze(g.dims(x)[i], "normalised over")
    for extra in outs[1:]:  # mean and rstd: the leading dimensions
        same_shape(g, x, extra, skip=set(range(x.dim() - k, x.dim())))


@rule("batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm", "_native_batch_norm_legit")
def batch_norm(g, p, inputs, outs) -> None:
    x, out = p["input"], outs[0]
    if x.dim() < 2:
        g.freeze_all([x, out], "a batch norm of an unusual rank")
        return
    same_shape(g, x, out)
    for name in ("weight", "bias", "running_mean", "running_var"):
        t = p.get(name)
        if t is not None:
            g.tie(g.dims(t)[0], g.dims(x)[1])


@rule("softmax", "_softmax", "log_softmax", "_log_softmax", "cumsum", "cumprod", "logcumsumexp")
def along_dim(g, p, inputs, outs) -> None:
    x, out = inputs[0], outs[0]
    same_shape(g, x, out)
    g.classes.freeze(g.dims(x)[_norm(p["dim"], x.dim())], "normalised or accumulated over")


REDUCTIONS = """sum mean amax amin max min prod var std var_mean std_mean norm linalg_vector_norm
logsumexp any all argmax argmin count_nonzero nansum nanmean""".split()  # noqa: SIM905 (a word list reads better as text)


@rule(*REDUCTIONS)
def reduction(g, p, inputs, outs) -> None:
    x = inputs[0]
    dims = p.get("dim")
    if dims is None:
        reduced = set(range(x.dim()))
    else:
        dims = [dims] if isinstance(dims, int) else list(dims)
        reduced = {_norm(d, x.dim()) for d in dims} if dims else set(range(x.dim()))
    for i in reduced:
        g.classes.freeze(g.dims(x)[i], "reduced over")
    kept = [i for i in range(x.dim()) if i not in reduced]
    xd = g.dims(x)
    for out in outs:
        od = g.dims(out)
        if p.get("keepdim") and out.dim() == x.dim():
            for i in kept:
                g.tie(xd[i], od[i])
        elif out.dim() == len(kept):
            for j, i in enumerate(kept):
                g.tie(xd[i], od[j])


POOLING = """max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d
adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d
_adaptive_avg_pool2d max_pool2d_with_indices upsample_nearest2d upsample_bilinear2d""".split()  # noqa: SIM905 (a word list reads better as text)


@rule(*POOLING)
def pooling(g, p, inputs, outs) -> None:
    x = inputs[0]
    spatial = 3 if "3d" in p["__name__"] else 1 if "1d" in p["__name__"] else 2
    for out in outs:
        same_shape(g, x, out, skip=set(range(x.dim() - spatial, x.dim())))


@rule("embedding")
def embedding(g, p, inputs, outs) -> None:
    w, ids, out = p["weight"], p["indices"], outs[0]
    g.classes.freeze(g.dims(w)[0], "indexed by token ids")
    g.tie(g.dims(w)[1], g.dims(out)[-1])
    same_shape(g, ids, out)


@rule("constant_pad_nd", "pad")
def pad(g, p, inputs, outs) -> None:
    x, out = inputs[0], outs[0]
    same_shape(g, x, out)
    for i in range(x.dim()):
        if x.shape[i] != out.shape[i]:
            g.classes.freeze(g.dims(x)[i], "padded")


@rule(
    "scaled_dot_product_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_attention_math",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_flash_attention",
)
def attention(g, p, inputs, outs) -> None:
    """q[..., L, E], k[..., S, E], v[..., S, Ev] -> out[..., L, Ev]; heads are batch dimensions."""
    q, k, v, out = p["query"], p["key"], p["value"], outs[0]
    qd, kd, vd, od = g.dims(q), g.dims(k), g.dims(v), g.dims(out)
    g.tie(qd[-1], kd[-1])
    g.tie(kd[-2], vd[-2])
    g.tie(qd[-2], od[-2])
    g.tie(vd[-1], od[-1])
    if p.get("scale") is None:
        g.classes.freeze(qd[-1], "sets the attention scale")
    for i in range(q.dim() - 2):
        g.tie(qd[i], od[i])
        for t, td in ((k, kd), (v, vd)):
            if t.shape[i] == q.shape[i]:
                g.tie(td[i], qd[i])
            elif q.shape[i] % t.shape[i] == 0 and i == q.dim() - 3:  # grouped-query heads
                kv_heads, per_group = g.classes.split(qd[i], [t.shape[i], q.shape[i] // t.shape[i]])
                g.tie(td[i], kv_heads)
                g.classes.freeze(per_group, "query heads sharing a key/value head")
            else:
                g.freeze_all([q, t], "attention of an unusual shape")
    for extra in outs[1:]:  # log-sum-exp or attention weights: the batch and head dimensions
        for i in range(min(extra.dim(), q.dim() - 2)):
            if extra.shape[i] == q.shape[i]:
                g.tie(g.dims(extra)[i], qd[i])
    mask = p.get("attn_mask")
    if mask is not None:
        g.freeze_all([mask], "an attention mask")


FACTORIES = """arange ones zeros empty full rand randn randint scalar_tensor eye linspace new_ones new_zeros
new_empty new_full empty_strided tensor zeros_like_strided""".split()  # noqa: SIM905 (a word list reads better as text)


@rule(*FACTORIES)
def factory(g, p, inputs, outs) -> None:
    g.freeze_all(outs, "created inside the forward pass with a fixed size")
