"""A TensorFlow.js graph model converted to ONNX (opset 13) with numpy and the onnx package alone.

Why our own converter: the only permissive 80-class detector on the registries we can reach
(NanoDet-g, Apache-2.0) ships as a TF.js graph, and running it through TensorFlow or tf2onnx would
add gigabytes to every worker for a job done once at set-up.

How it works, in three passes:
1. **Fold.** A node whose inputs are all constants is computed here with numpy (the model's
   reshape-shape subgraphs of SparseToDense and AddV2 are such), so ONNX sees only constants.
2. **Emit.** Every other node becomes ONNX nodes with the same meaning. TF's NHWC image ops
   (Conv2D, MaxPool, ResizeBilinear) are wrapped in transposes to ONNX's NCHW; a Conv2D whose only
   consumer adds a per-channel constant takes it as its bias. Shapes are tracked, so SAME padding,
   resize sizes and negative axes are resolved to numbers.
3. **Tidy.** Two transposes in a row become one (or none), and nodes nobody reads are dropped: a
   graph that was converted ONNX -> TF upstream (NCHW wrapped in NHWC transposes) comes back as
   plain NCHW convolutions.

Supported ops: see `_EMIT` and `_FOLD`; any other op is refused by name.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from worker.models.tfjs import ModelFormatError, TfGraph, TfNode

OPSET = 13
IR_VERSION = 8  # what onnxruntime 1.x and OpenCV's importer both read
CONVERTER_VERSION = 2  # bump when the output for the same input changes: caches rebuild

_TO_NCHW, _TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)
_ONNX_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32,
               np.dtype(np.int64): TensorProto.INT64, np.dtype(np.bool_): TensorProto.BOOL}


@dataclass
class _Op:
    """An ONNX node before it is built (the tidy pass rewires these)."""

    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Value:
    """A tensor during conversion: a constant array, or a named dynamic tensor with a known shape."""

    shape: tuple[int, ...]
    dtype: np.dtype
    const: np.ndarray | None = None
    name: str = ""
    conv: _Op | None = None  # the Conv that produced it, still without a bias (for bias fusion)

    @property
    def rank(self) -> int:
        return len(self.shape)


def _const(array: np.ndarray) -> _Value:
    array = np.asarray(array)
    return _Value(tuple(array.shape), array.dtype, const=array)


class _Builder:
    """Collects ONNX nodes and initialisers with unique names."""

    def __init__(self) -> None:
        self.ops: list[_Op] = []
        self.initializers: dict[str, np.ndarray] = {}
        self._names: Counter[str] = Counter()
        self.consumers: Counter[tuple[str, int]] = Counter()  # how many nodes read each TF tensor
        self.dynamic_hw = False  # resizes by scale, not to a size: the graph then takes other spatial sizes

    def fresh(self, hint: str) -> str:
        """A tensor name not used before."""
        hint = hint.replace(":", "_")
        self._names[hint] += 1
        n = self._names[hint]
        return hint if n == 1 else f"{hint}__{n}"

    def init(self, array: np.ndarray, hint: str) -> str:
        """An initialiser holding `array`."""
        name = self.fresh(hint)
        self.initializers[name] = np.array(array, order="C")  # keeps 0-d scalars 0-d
        return name

    def name_of(self, v: _Value, hint: str) -> str:
        """The ONNX name of a value (a constant becomes an initialiser on first use)."""
        if v.const is None:
            return v.name
        if not v.name:
            v.name = self.init(_onnx_array(v.const), hint)
        return v.name

    def op(self, op_type: str, inputs: Sequence[str], hint: str, n_out: int = 1, **attrs: Any) -> _Op:
        """Append a node; its outputs get fresh names from `hint`."""
        outs = [self.fresh(hint if i == 0 else f"{hint}_{i}") for i in range(n_out)]
        node = _Op(op_type, list(inputs), outs, attrs)
        self.ops.append(node)
        return node


def _onnx_array(a: np.ndarray) -> np.ndarray:
    """int32 shape-like constants stay int32 except where ONNX wants int64 (the caller converts)."""
    return a.astype(np.float32) if a.dtype == np.float64 else a


# ---------------------------------------------------------------------------------------------------
# Constant folding: numpy versions of the ops that appear between constants


def _fold_sparse_to_dense(a: list[np.ndarray], node: TfNode) -> np.ndarray:
    indices, shape, values, default = a
    out = np.full(tuple(int(d) for d in np.ravel(shape)), default, dtype=np.asarray(values).dtype)
    idx = np.asarray(indices).reshape(-1, max(1, out.ndim)) if np.size(indices) else np.zeros((0, out.ndim), int)
    vals = np.broadcast_to(values, (len(idx),))
    for i, v in zip(idx, vals):
        out[tuple(int(k) for k in i)] = v
    return out


_FOLD: dict[str, Callable[[list[np.ndarray], TfNode], np.ndarray]] = {
    "Identity": lambda a, n: a[0],
    "Add": lambda a, n: np.add(a[0], a[1]).astype(np.result_type(a[0], a[1])),
    "AddV2": lambda a, n: np.add(a[0], a[1]).astype(np.result_type(a[0], a[1])),
    "Sub": lambda a, n: np.subtract(a[0], a[1]),
    "Mul": lambda a, n: np.multiply(a[0], a[1]),
    "Reshape": lambda a, n: np.reshape(a[0], [int(d) for d in np.ravel(a[1])]),
    "Transpose": lambda a, n: np.transpose(a[0], [int(d) for d in np.ravel(a[1])]),
    "ConcatV2": lambda a, n: np.concatenate(a[:-1], axis=int(a[-1])),
    "SparseToDense": _fold_sparse_to_dense,
}


# ---------------------------------------------------------------------------------------------------
# Emission: one function per TF op, (builder, node, inputs) -> outputs


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError as e:
        raise ModelFormatError(f"shapes {a} and {b} do not broadcast") from e


def _unary(onnx_op: str, **attrs: Any) -> Callable[[_Builder, TfNode, list[_Value]], list[_Value]]:
    def emit(b: _Builder, node: TfNode, x: list[_Value]) -> list[_Value]:
        extra = {k: (v(node) if callable(v) else v) for k, v in attrs.items()}
        out = b.op(onnx_op, [b.name_of(x[0], node.name)], node.name, **extra)
        return [_Value(x[0].shape, x[0].dtype, name=out.outputs[0])]
    return emit


def _emit_binary(onnx_op: str) -> Callable[[_Builder, TfNode, list[_Value]], list[_Value]]:
    def emit(b: _Builder, node: TfNode, x: list[_Value]) -> list[_Value]:
        if onnx_op == "Add":
            fused = _fuse_bias(b, x)
            if fused is not None:
                return [fused]
        out = b.op(onnx_op, [b.name_of(v, f"{node.name}_in{i}") for i, v in enumerate(x)], node.name)
        return [_Value(_broadcast(x[0].shape, x[1].shape), x[0].dtype, name=out.outputs[0])]
    return emit


def _fuse_bias(b: _Builder, x: list[_Value]) -> _Value | None:
    """A per-channel constant added to a fresh NHWC convolution becomes that Conv's bias."""
    dyn, const = (x[0], x[1]) if x[1].const is not None else (x[1], x[0])
    if dyn.conv is None or const.const is None or const.const.ndim != 1 or len(const.const) != dyn.shape[-1]:
        return None
    dyn.conv.inputs.append(b.init(const.const.astype(np.float32), f"{dyn.conv.outputs[0]}_bias"))
    return _Value(dyn.shape, dyn.dtype, name=dyn.name)


def _perm(v: _Value, node: TfNode) -> list[int]:
    if v.const is None:
        raise ModelFormatError(f"{node.op} {node.name!r}: its permutation/axis/shape input must be constant")
    return [int(d) for d in np.ravel(v.const)]


def _transpose(b: _Builder, x: _Value, perm: Sequence[int], hint: str) -> _Value:
    out = b.op("Transpose", [b.name_of(x, hint)], hint, perm=list(perm))
    return _Value(tuple(x.shape[p] for p in perm), x.dtype, name=out.outputs[0])


def _emit_transpose(b: _Builder, node: TfNode, x: list[_Value]) -> list[_Value]:
    return [_transpose(b, x[0], _perm(x[1], node), node.name)]


def _emit_reshape(b: _Builder, node: TfNode, x: list[_Value]) -> list[_Value]:
    target = _perm(x[1], node)
    shape = np.empty(x[0].shape, np.bool_).reshape(target).shape if x[0].shape else tuple(target)
    shape_name = b.init(np.asarray(target, np.int64), f"{node.name}_shape")
    out = b.op("Reshape", [b.name_of(x[0], node.name), shape_name], node.name)
    return [_Value(tuple(shape), x[0].dtype, name=out.outputs[0])]


def _emit_pad(b: _Builder, node: TfNode, x: list[_Value]) -> list[_Value]:
    pads = np.asarray(_perm(x[1], node), np.int64).reshape(-1, 2)
    if len(pads) != x[0].rank:
        raise ModelFormatError(f"Pad {node.name!r}: paddings for rank {len(pads)}, tensor has rank {x[0].rank}")
    inputs = [b.name_of(x[0], node.name), b.init(np.concatenate([pads[:, 0], pads[:, 1]]), f"{node.name}_pads")]
    if len(x) > 2:  # PadV2: a constant value
        inputs.append(b.init(np.asarray(x[2].const, np.float32).reshape(()), f"{node.name}_value"))
    out = b.op("Pad", inputs, node.name, mode="constant")
    shape = tuple(int(d + lo + hi) for d, (lo, hi) in zip(x[0].shape, pads))
    return [_Value(shape, x[0].dtype, name=out.outputs[0])]


def _emit_concat(b: _Builder, node: TfNode, x: list[_Value]) -> list[_Value]:
    parts, axis_v = x[:-1], x[-1]
    axis = _perm(axis_v, node)[0] % parts[0].rank
    shape = list(parts[0].shape)
    shape[axis] = sum(p.shape[axis] for p in parts)
    out = b.op("Concat", [b.name_of(p, f"{node.name}_in{i}") for i, p in enumerate(parts)], node.name, axis=axis)
    return [_Value(tuple(shape), parts[0].dtype, name=out.outputs[0])]


def _emit_split(b: _Builder, node: TfNode, x: list[_Value]) -> list[_Value]:
    sizes, axis = _perm(x[1], node), _perm(x[2], node)[0] % x[0].rank
    if sizes.count(-1) == 1:
        sizes[sizes.index(-1)] = x[0].shape[axis] - (sum(sizes) + 1)
    if sum(sizes) != x[0].shape[axis] or min(sizes) < 0:
        raise ModelFormatError(f"SplitV {node.name!r}: sizes {sizes} do not add up to {x[0].shape[axis]}")
    split = b.init(np.asarray(sizes, np.int64), f"{node.name}_sizes")
    out = b.op("Split", [b.name_of(x[0], node.name), split], node.name, n_out=len(sizes), axis=axis)
    shapes = [tuple(s if i != axis else n for i, s in enumerate(x[0].shape)) for n in sizes]
    return [_Value(s, x[0].dtype, name=o) for s, o in zip(shapes, out.outputs)]


def _nhwc_only(node: TfNode) -> None:
    fmt = node.attr_str("data_format", "NHWC")
    if fmt != "NHWC":
        raise ModelFormatError(f"{node.op} {node.name!r}: data_format {fmt} is not supported (NHWC only)")


def _same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TF's SAME padding for one spatial axis: (before, after), the extra pixel after."""
    eff = (k - 1) * d + 1
    total = max((-(-size // s) - 1) * s + eff - size, 0)
    return total // 2, total - total // 2


def _spatial_pads(node: TfNode, hw: tuple[int, int], kernel: tuple[int, int], strides: Sequence[int],
                  dilations: Sequence[int]) -> list[int]:
    """ONNX pads [top, left, bottom, right] for TF padding VALID, SAME or EXPLICIT."""
    padding = node.attr_str("padding", "VALID")
    if padding == "VALID":
        return [0, 0, 0, 0]
    if padding == "SAME":
        (t, bo), (le, r) = (_same_pads(hw[i], kernel[i], strides[i], dilations[i]) for i in range(2))
        return [t, le, bo, r]
    if padding == "EXPLICIT":
        e = node.attr_int_list("explicit_paddings")  # NHWC pairs
        return [e[2], e[4], e[3], e[5]]
    raise ModelFormatError(f"{node.op} {node.name!r}: padding {padding!r} is not supported")


def _out_size(size: int, k: int, s: int, d: int, lo: int, hi: int) -> int:
    return (size + lo + hi - ((k - 1) * d + 1)) // s + 1


def _emit_conv(b: _Builder, node: TfNode, x: list[_Value]) -> list[_Value]:
    _nhwc_only(node)
    inp, filt = x
    if filt.const is None or filt.const.ndim != 4:
        raise ModelFormatError(f"Conv2D {node.name!r}: the filter must be a constant [kh, kw, in, out]")
    kh, kw, cin, cout = filt.const.shape
    if inp.shape[3] % cin:
        raise ModelFormatError(f"Conv2D {node.name!r}: {inp.shape[3]} input channels, filter wants {cin}")
    strides, dil = node.attr_int_list("strides")[1:3] or [1, 1], node.attr_int_list("dilations")[1:3] or [1, 1]
    n, h, w, _ = inp.shape
    pads = _spatial_pads(node, (h, w), (kh, kw), strides, dil)
    weight = b.init(np.transpose(filt.const, (3, 2, 0, 1)).astype(np.float32), f"{node.name}_weight")
    nchw = _transpose(b, inp, _TO_NCHW, f"{node.name}_nchw")
    conv = b.op("Conv", [nchw.name, weight], node.name, kernel_shape=[kh, kw], strides=strides,
                dilations=dil, pads=pads, group=inp.shape[3] // cin)
    oh, ow = (_out_size(s, k, st, d, pads[i], pads[i + 2])
              for i, (s, k, st, d) in enumerate(zip((h, w), (kh, kw), strides, dil)))
    out = _transpose(b, _Value((n, cout, oh, ow), inp.dtype, name=conv.outputs[0]), _TO_NHWC, f"{node.name}_nhwc")
    if b.consumers[(node.name, 0)] == 1:  # a bias may be folded in only when nothing else reads it bare
        out.conv = conv
    return [out]


def _emit_maxpool(b: _Builder, node: TfNode, x: list[_Value]) -> list[_Value]:
    _nhwc_only(node)
    (kh, kw), strides = node.attr_int_list("ksize")[1:3], node.attr_int_list("strides")[1:3]
    n, h, w, c = x[0].shape
    pads = _spatial_pads(node, (h, w), (kh, kw), strides, (1, 1))
    nchw = _transpose(b, x[0], _TO_NCHW, f"{node.name}_nchw")
    pool = b.op("MaxPool", [nchw.name], node.name, kernel_shape=[kh, kw], strides=strides, pads=pads)
    oh, ow = (_out_size(s, k, st, 1, pads[i], pads[i + 2])
              for i, (s, k, st) in enumerate(zip((h, w), (kh, kw), strides)))
    return [_transpose(b, _Value((n, c, oh, ow), x[0].dtype, name=pool.outputs[0]), _TO_NHWC, f"{node.name}_nhwc")]


def _emit_resize(b: _Builder, node: TfNode, x: list[_Value]) -> list[_Value]:
    oh, ow = _perm(x[1], node)
    n, _, _, c = x[0].shape
    if node.attr_bool("align_corners"):
        mode = "align_corners"
    else:
        mode = "half_pixel" if node.attr_bool("half_pixel_centers") else "asymmetric"
    nchw = _transpose(b, x[0], _TO_NCHW, f"{node.name}_nchw")
    if b.dynamic_hw:  # the same ratio at any input size (the traced size only fixes the ratio)
        ratio = np.asarray([1.0, 1.0, oh / x[0].shape[1], ow / x[0].shape[2]], np.float32)
        resize_inputs = [nchw.name, "", b.init(ratio, f"{node.name}_scales")]
    else:
        resize_inputs = [nchw.name, "", "", b.init(np.asarray([n, c, oh, ow], np.int64), f"{node.name}_sizes")]
    resize = b.op("Resize", resize_inputs, node.name, mode="linear", coordinate_transformation_mode=mode)
    return [_transpose(b, _Value((n, c, oh, ow), x[0].dtype, name=resize.outputs[0]), _TO_NHWC, f"{node.name}_nhwc")]


def _emit_bias_add(b: _Builder, node: TfNode, x: list[_Value]) -> list[_Value]:
    _nhwc_only(node)
    return _emit_binary("Add")(b, node, x)


def _emit_identity(b: _Builder, node: TfNode, x: list[_Value]) -> list[_Value]:
    return [_Value(x[0].shape, x[0].dtype, name=x[0].name)]


_EMIT: dict[str, Callable[[_Builder, TfNode, list[_Value]], list[_Value]]] = {
    "Identity": _emit_identity,
    "Transpose": _emit_transpose,
    "Reshape": _emit_reshape,
    "Pad": _emit_pad,
    "PadV2": _emit_pad,
    "ConcatV2": _emit_concat,
    "SplitV": _emit_split,
    "Conv2D": _emit_conv,
    "MaxPool": _emit_maxpool,
    "ResizeBilinear": _emit_resize,
    "Add": _emit_binary("Add"),
    "AddV2": _emit_binary("Add"),
    "BiasAdd": _emit_bias_add,
    "Sub": _emit_binary("Sub"),
    "Mul": _emit_binary("Mul"),
    "LeakyRelu": _unary("LeakyRelu", alpha=lambda n: n.attr_float("alpha", 0.2)),
    "Relu": _unary("Relu"),
    "Sigmoid": _unary("Sigmoid"),
}


# ---------------------------------------------------------------------------------------------------
# The conversion


def _order(graph: TfGraph) -> list[TfNode]:
    """Nodes that the outputs depend on, producers before consumers (file order where free)."""
    by_name = {n.name: n for n in graph.nodes}
    missing = {p for n in graph.nodes for p, _ in n.inputs if p not in by_name}
    if missing:
        raise ModelFormatError(f"nodes read tensors nobody produces: {sorted(missing)[:5]}")
    done: set[str] = set()
    order: list[TfNode] = []
    for root in graph.outputs:
        stack: list[tuple[str, bool]] = [(root, False)]
        while stack:
            name, expanded = stack.pop()
            if name in done:
                continue
            if expanded:
                done.add(name)
                order.append(by_name[name])
                continue
            stack.append((name, True))
            stack.extend((p, False) for p, _ in reversed(by_name[name].inputs) if p not in done)
    return order


def _placeholder(b: _Builder, node: TfNode, shape: Sequence[int] | None) -> _Value:
    dims = [int(d.get("size", -1)) for d in node.attr.get("shape", {}).get("shape", {}).get("dim", [])]
    if shape is not None:
        dims = list(shape)
    if not dims or min(dims) < 1:
        raise ModelFormatError(f"input {node.name!r} has shape {dims}: pass a static input shape")
    return _Value(tuple(dims), np.dtype(np.float32), name=b.fresh(node.name))


def _convert_node(b: _Builder, node: TfNode, values: dict[tuple[str, int], _Value]) -> list[_Value]:
    try:
        inputs = [values[i] for i in node.inputs]
    except KeyError as e:
        raise ModelFormatError(f"{node.op} {node.name!r}: input {e} was never computed") from e
    if inputs and all(v.const is not None for v in inputs) and node.op in _FOLD:
        return [_const(_FOLD[node.op]([v.const for v in inputs], node))]
    if node.op not in _EMIT:
        raise ModelFormatError(f"op {node.op} ({node.name!r}) is not supported by the converter")
    return _EMIT[node.op](b, node, inputs)


def convert(graph: TfGraph, *, input_shape: Sequence[int] | None = None, name: str = "model",
            metadata: dict[str, str] | None = None, free_dims: Sequence[int] = ()) -> onnx.ModelProto:
    """The ONNX model computing the same outputs as `graph` (its inputs keep their names).

    `free_dims`: input dimensions left free (e.g. (2, 3), an NCHW input's height and width), with
    resizes keeping their ratio: a fully convolutional model then runs on a letterbox cut to the
    frame's aspect instead of a square. The shapes traced here (the declared or given input shape)
    fix the ratios only; the caller must feed sizes the model's strides divide."""
    b = _Builder()
    b.dynamic_hw = bool(free_dims)
    out_names = {n: b.fresh(n) for n in graph.outputs}
    values: dict[tuple[str, int], _Value] = {}
    graph_inputs: list[_Value] = []
    nodes = _order(graph)
    b.consumers.update(i for n in nodes for i in n.inputs)
    for node in nodes:
        if node.op == "Const":
            if node.name not in graph.weights:
                raise ModelFormatError(f"constant {node.name!r} has no weight in the manifest")
            values[(node.name, 0)] = _const(graph.weights[node.name])
        elif node.op == "Placeholder":
            v = _placeholder(b, node, input_shape)
            graph_inputs.append(v)
            values[(node.name, 0)] = v
        else:
            for i, v in enumerate(_convert_node(b, node, values)):
                values[(node.name, i)] = v
    outputs = [_output(b, values[(n, 0)], n, out_names[n]) for n in graph.outputs]
    _tidy(b, {o.name for o in outputs})
    return _build(b, graph_inputs, outputs, name, metadata or {}, tuple(free_dims))


def _output(b: _Builder, v: _Value, tf_name: str, name: str) -> _Value:
    """Each graph output gets its own Identity node named after the TF output."""
    if v.const is not None:
        raise ModelFormatError(f"output {tf_name!r} is a constant")
    b.ops.append(_Op("Identity", [v.name], [name]))
    return _Value(v.shape, v.dtype, name=name)


def _tidy(b: _Builder, keep: set[str]) -> None:
    """Merge chains of transposes, drop identities and dead nodes."""
    changed = True
    while changed:
        changed = _merge_transposes(b) | _drop_identities(b, keep)
    _drop_dead(b, keep)
    _fuse_pads(b, keep)
    _drop_dead(b, keep)


def _merge_transposes(b: _Builder) -> bool:
    producer = {o: op for op in b.ops for o in op.outputs}
    changed = False
    for op in b.ops:
        if op.op_type != "Transpose":
            continue
        src = producer.get(op.inputs[0])
        if src is None or src.op_type != "Transpose":
            continue
        outer, inner = op.attrs["perm"], src.attrs["perm"]
        composed = [inner[p] for p in outer]
        op.inputs = [src.inputs[0]]
        if composed == sorted(composed):
            op.op_type, op.attrs = "Identity", {}
        else:
            op.attrs = {"perm": composed}
        changed = True
    return changed


def _fuse_pads(b: _Builder, keep: set[str]) -> None:
    """A spatial Pad read only by one Conv (zeros) or MaxPool (-inf) becomes that node's own padding:
    one pass over memory instead of two."""
    readers = Counter(i for op in b.ops for i in op.inputs)
    producer = {o: op for op in b.ops for o in op.outputs}
    for op in b.ops:
        pad = producer.get(op.inputs[0]) if op.op_type in ("Conv", "MaxPool") else None
        if pad is None or pad.op_type != "Pad" or readers[pad.outputs[0]] != 1 or pad.outputs[0] in keep:
            continue
        amounts = b.initializers[pad.inputs[1]].tolist()
        value = float(b.initializers[pad.inputs[2]]) if len(pad.inputs) > 2 else 0.0
        wanted = 0.0 if op.op_type == "Conv" else float("-inf")
        if any(amounts[i] for i in (0, 1, 4, 5)) or value != wanted:
            continue
        t, le, bo, r = amounts[2], amounts[3], amounts[6], amounts[7]
        p = op.attrs["pads"]
        op.attrs["pads"] = [p[0] + t, p[1] + le, p[2] + bo, p[3] + r]
        op.inputs[0] = pad.inputs[0]


def _drop_identities(b: _Builder, keep: set[str]) -> bool:
    """An Identity whose output is not a graph output is bypassed."""
    alias = {op.outputs[0]: op.inputs[0] for op in b.ops if op.op_type == "Identity" and op.outputs[0] not in keep}
    if not alias:
        return False

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    b.ops = [op for op in b.ops if not (op.op_type == "Identity" and op.outputs[0] in alias)]
    for op in b.ops:
        op.inputs = [resolve(i) if i else i for i in op.inputs]
    return True


def _drop_dead(b: _Builder, keep: set[str]) -> None:
    live = set(keep)
    kept: list[_Op] = []
    for op in reversed(b.ops):
        if any(o in live for o in op.outputs):
            kept.append(op)
            live.update(i for i in op.inputs if i)
    b.ops = kept[::-1]
    b.initializers = {k: v for k, v in b.initializers.items() if k in live}


def _build(b: _Builder, inputs: list[_Value], outputs: list[_Value], name: str,
           metadata: dict[str, str], free_dims: tuple[int, ...]) -> onnx.ModelProto:
    nodes = [helper.make_node(op.op_type, op.inputs, op.outputs, name=op.outputs[0], **op.attrs) for op in b.ops]
    inits = [numpy_helper.from_array(a, k) for k, a in b.initializers.items()]

    def in_dims(v: _Value) -> list[int | str]:
        return [f"dim{i}" if i in free_dims else d for i, d in enumerate(v.shape)]

    def out_dims(v: _Value) -> list[int | str]:  # with free inputs, any output dim may vary: all named
        return [f"{v.name}_dim{i}" for i in range(v.rank)] if free_dims else list(v.shape)

    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info(v.name, _ONNX_TYPES[v.dtype], in_dims(v)) for v in inputs],
        [helper.make_tensor_value_info(v.name, _ONNX_TYPES[v.dtype], out_dims(v)) for v in outputs], inits)
    model = helper.make_model(graph, producer_name="framehive", producer_version=str(CONVERTER_VERSION),
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    helper.set_model_props(model, dict(sorted(metadata.items())))
    onnx.checker.check_model(model)
    return model


def model_digest(model: onnx.ModelProto) -> str:
    """sha256 of the serialised model (deterministic for the same input and converter version)."""
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()
