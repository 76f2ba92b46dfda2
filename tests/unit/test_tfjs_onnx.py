"""The TF.js -> ONNX converter, op by op: small graphs built here, run by onnxruntime, checked against
numpy written from TensorFlow's documented semantics (NHWC, VALID/SAME/EXPLICIT padding, resize modes)."""

from __future__ import annotations

import base64
import json
from collections import Counter

import numpy as np
import onnxruntime as ort
import pytest

from worker.models.tfjs import ModelFormatError, read_graph, read_weights
from worker.models.tfjs_onnx import convert, model_digest

RNG = np.random.default_rng(7)
TOL = 1e-4


class GraphBuilder:
    """Writes a TF.js graph model (model.json dict + weight bytes) the way tfjs-converter does."""

    def __init__(self) -> None:
        self.nodes: list[dict] = []
        self.weights: list[tuple[dict, bytes]] = []

    def input(self, name: str, shape: list[int]) -> str:
        self.nodes.append({"name": name, "op": "Placeholder",
                           "attr": {"shape": {"shape": {"dim": [{"size": str(d)} for d in shape]}}}})
        return name

    def const(self, name: str, value, dtype: str = "float32", quant: str | None = None) -> str:
        arr = np.asarray(value, np.float32 if dtype == "float32" else np.int32)
        spec = {"name": name, "shape": list(arr.shape), "dtype": dtype}
        data = arr.tobytes()
        if quant == "float16":
            spec["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
            data = arr.astype(np.float16).tobytes()
        self.nodes.append({"name": name, "op": "Const", "attr": {}})
        self.weights.append((spec, data))
        return name

    def op(self, name: str, op: str, inputs: list[str], **attr) -> str:
        self.nodes.append({"name": name, "op": op, "input": inputs, "attr": attr})
        return name

    def model(self, outputs: list[str]) -> tuple[dict, bytes]:
        sig = {f"{o}:0": {"name": f"{o}:0"} for o in outputs}
        return ({"format": "graph-model", "modelTopology": {"node": self.nodes},
                 "signature": {"outputs": sig},
                 "weightsManifest": [{"paths": ["w.bin"], "weights": [s for s, _ in self.weights]}]},
                b"".join(d for _, d in self.weights))


def s_attr(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def ints(*v: int) -> dict:
    return {"list": {"i": [str(x) for x in v]}}


def run(g: GraphBuilder, outputs: list[str], feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], object]:
    model_json, data = g.model(outputs)
    model = convert(read_graph(model_json, [data]))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v.astype(np.float32) for k, v in feeds.items()}), model


def ops_of(model) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


# ----- numpy references (TensorFlow semantics) -----------------------------------------------------

def same_pads(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def conv_ref(x: np.ndarray, w: np.ndarray, stride: int, dil: int, pads: tuple[int, int, int, int]) -> np.ndarray:
    t, b, le, r = pads
    xp = np.pad(x, ((0, 0), (t, b), (le, r), (0, 0)))
    kh, kw, _, cout = w.shape
    oh = (xp.shape[1] - ((kh - 1) * dil + 1)) // stride + 1
    ow = (xp.shape[2] - ((kw - 1) * dil + 1)) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, cout))
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dil, i * dil + (oh - 1) * stride + 1, stride)
            cols = slice(j * dil, j * dil + (ow - 1) * stride + 1, stride)
            patch = xp[:, rows, cols]
            out += np.einsum("nhwc,co->nhwo", patch, w[i, j])
    return out


def pool_ref(x: np.ndarray, k: int, s: int, pads: tuple[int, int, int, int]) -> np.ndarray:
    t, b, le, r = pads
    xp = np.pad(x, ((0, 0), (t, b), (le, r), (0, 0)), constant_values=-np.inf)
    oh, ow = (xp.shape[1] - k) // s + 1, (xp.shape[2] - k) // s + 1
    return np.stack([np.stack([xp[:, i * s:i * s + k, j * s:j * s + k].max(axis=(1, 2)) for j in range(ow)], 1)
                     for i in range(oh)], 1)


def resize_ref(x: np.ndarray, oh: int, ow: int, mode: str) -> np.ndarray:
    """tf.image.resize bilinear for one NHWC tensor, in the three coordinate conventions."""
    h, w = x.shape[1:3]

    def coords(out: int, size: int) -> np.ndarray:
        o = np.arange(out, dtype=np.float64)
        if mode == "align_corners":
            return o * ((size - 1) / (out - 1) if out > 1 else 0.0)
        if mode == "half_pixel":
            return np.maximum((o + 0.5) * size / out - 0.5, 0.0)
        return o * size / out

    ys, xs = coords(oh, h), coords(ow, w)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[None, :, None, None], (xs - x0)[None, None, :, None]
    top = x[:, y0][:, :, x0] * (1 - fx) + x[:, y0][:, :, x1] * fx
    bottom = x[:, y1][:, :, x0] * (1 - fx) + x[:, y1][:, :, x1] * fx
    return top * (1 - fy) + bottom * fy


# ----- ops -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("padding,stride,dil", [("VALID", 1, 1), ("VALID", 2, 1), ("SAME", 1, 1), ("SAME", 2, 1),
                                                ("SAME", 1, 2), ("EXPLICIT", 2, 1)])
def test_conv2d_nhwc_matches_tensorflow_semantics(padding, stride, dil):
    x = RNG.standard_normal((1, 9, 11, 3))
    w = RNG.standard_normal((3, 3, 3, 5)).astype(np.float32)
    g = GraphBuilder()
    g.input("x", [1, 9, 11, 3])
    g.const("w", w)
    attr = {"padding": s_attr(padding), "data_format": s_attr("NHWC"), "strides": ints(1, stride, stride, 1),
            "dilations": ints(1, dil, dil, 1)}
    explicit = (1, 2, 0, 1)
    if padding == "EXPLICIT":
        attr["explicit_paddings"] = ints(0, 0, explicit[0], explicit[1], explicit[2], explicit[3], 0, 0)
    g.op("y", "Conv2D", ["x", "w"], **attr)
    (y,), _ = run(g, ["y"], {"x": x})
    if padding == "SAME":
        pads = (*same_pads(9, 3, stride, dil), *same_pads(11, 3, stride, dil))
    else:
        pads = explicit if padding == "EXPLICIT" else (0, 0, 0, 0)
    np.testing.assert_allclose(y, conv_ref(x, w, stride, dil, pads), atol=TOL)


def test_a_per_channel_add_after_a_conv_becomes_its_bias():
    x, w, bias = RNG.standard_normal((1, 6, 6, 2)), RNG.standard_normal((1, 1, 2, 4)), RNG.standard_normal(4)
    g = GraphBuilder()
    g.input("x", [1, 6, 6, 2])
    g.const("w", w)
    g.const("b", bias)
    g.op("c", "Conv2D", ["x", "w"], padding=s_attr("VALID"), strides=ints(1, 1, 1, 1))
    g.op("y", "Add", ["c", "b"])
    (y,), model = run(g, ["y"], {"x": x})
    np.testing.assert_allclose(y, conv_ref(x, w, 1, 1, (0, 0, 0, 0)) + bias, atol=TOL)
    assert "Add" not in ops_of(model)  # folded into the Conv
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert len(conv.input) == 3


def test_a_conv_read_elsewhere_too_keeps_its_add():
    x, w, bias = RNG.standard_normal((1, 4, 4, 2)), RNG.standard_normal((1, 1, 2, 2)), RNG.standard_normal(2)
    g = GraphBuilder()
    g.input("x", [1, 4, 4, 2])
    g.const("w", w)
    g.const("b", bias)
    g.op("c", "Conv2D", ["x", "w"], padding=s_attr("VALID"), strides=ints(1, 1, 1, 1))
    g.op("y", "Add", ["c", "b"])
    g.op("z", "Sigmoid", ["c"])
    (y, z), model = run(g, ["y", "z"], {"x": x})
    c = conv_ref(x, w, 1, 1, (0, 0, 0, 0))
    np.testing.assert_allclose(y, c + bias, atol=TOL)
    np.testing.assert_allclose(z, 1 / (1 + np.exp(-c)), atol=TOL)
    assert ops_of(model)["Add"] == 1


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_maxpool_nhwc(padding):
    x = RNG.standard_normal((1, 7, 8, 3))
    g = GraphBuilder()
    g.input("x", [1, 7, 8, 3])
    g.op("y", "MaxPool", ["x"], ksize=ints(1, 3, 3, 1), strides=ints(1, 2, 2, 1), padding=s_attr(padding),
         data_format=s_attr("NHWC"))
    (y,), _ = run(g, ["y"], {"x": x})
    pads = (*same_pads(7, 3, 2), *same_pads(8, 3, 2)) if padding == "SAME" else (0, 0, 0, 0)
    np.testing.assert_allclose(y, pool_ref(x, 3, 2, pads), atol=TOL)


@pytest.mark.parametrize("flags,mode", [({"half_pixel_centers": {"b": True}}, "half_pixel"),
                                        ({"align_corners": {"b": True}}, "align_corners"),
                                        ({}, "asymmetric")])
@pytest.mark.parametrize("size", [(10, 14), (3, 4)])
def test_resize_bilinear_in_each_coordinate_mode(flags, mode, size):
    x = RNG.standard_normal((1, 5, 7, 2))
    g = GraphBuilder()
    g.input("x", [1, 5, 7, 2])
    g.const("size", list(size), "int32")
    g.op("y", "ResizeBilinear", ["x", "size"], **flags)
    (y,), _ = run(g, ["y"], {"x": x})
    np.testing.assert_allclose(y, resize_ref(x, *size, mode), atol=TOL)


def test_pad_padv2_concat_split_reshape_transpose_and_activations():
    x = RNG.standard_normal((1, 2, 4, 6))
    g = GraphBuilder()
    g.input("x", [1, 2, 4, 6])
    g.const("pads", [[0, 0], [0, 0], [1, 2], [0, 1]], "int32")
    g.const("val", -3.0)
    g.op("p", "Pad", ["x", "pads"])
    g.op("p2", "PadV2", ["x", "pads", "val"])
    g.const("axis", -1, "int32")
    g.op("cat", "ConcatV2", ["p", "p2", "axis"], N={"i": "2"})
    g.const("sizes", [2, -1], "int32")
    g.const("dim", 3, "int32")
    g.op("sp", "SplitV", ["x", "sizes", "dim"], num_split={"i": "2"})
    g.const("shape", [1, -1, 2], "int32")
    g.op("rs", "Reshape", ["sp:1", "shape"])
    g.const("perm", [0, 2, 1], "int32")
    g.op("tr", "Transpose", ["rs", "perm"])
    g.op("lr", "LeakyRelu", ["sp"], alpha={"f": 0.1})
    g.op("re", "Relu", ["tr"])
    g.const("two", 2.0)
    g.op("mu", "Mul", ["lr", "two"])
    g.op("su", "Sub", ["mu", "two"])
    (cat, re, su), _ = run(g, ["cat", "re", "su"], {"x": x})
    pads = ((0, 0), (0, 0), (1, 2), (0, 1))
    np.testing.assert_allclose(cat, np.concatenate([np.pad(x, pads), np.pad(x, pads, constant_values=-3.0)], -1),
                               atol=TOL)
    first, second = x[..., :2], x[..., 2:]
    np.testing.assert_allclose(re, np.maximum(second.reshape(1, -1, 2).transpose(0, 2, 1), 0), atol=TOL)
    np.testing.assert_allclose(su, np.where(first > 0, first, 0.1 * first) * 2 - 2, atol=TOL)


def test_constant_subgraphs_are_folded():
    """A reshape whose shape comes from SparseToDense + AddV2 (how NanoDet's heads are written) is a
    plain Reshape with a constant shape after conversion."""
    x = RNG.standard_normal((1, 4, 6))
    g = GraphBuilder()
    g.input("x", [1, 4, 6])
    g.const("idx", np.zeros((0, 1)), "int32")
    g.const("out_shape", [3], "int32")
    g.const("vals", np.zeros(0), "int32")
    g.const("zero", 0, "int32")
    g.op("dense", "SparseToDense", ["idx", "out_shape", "vals", "zero"])
    g.const("base", [1, 6, 4], "int32")
    g.op("shape", "AddV2", ["base", "dense"])
    g.op("y", "Reshape", ["x", "shape"])
    (y,), model = run(g, ["y"], {"x": x})
    np.testing.assert_allclose(y, x.reshape(1, 6, 4), atol=TOL)
    assert set(ops_of(model)) <= {"Reshape", "Identity"}


def test_transposes_around_nhwc_ops_cancel_and_pads_fold_into_the_conv():
    """An NCHW graph converted to TF (transposes around every conv, explicit Pad nodes) comes back as
    plain NCHW convolutions: no Transpose, no Pad left."""
    x = RNG.standard_normal((1, 3, 8, 8))
    w1, w2 = RNG.standard_normal((3, 3, 3, 4)), RNG.standard_normal((3, 3, 4, 4))
    g = GraphBuilder()
    g.input("x", [1, 3, 8, 8])
    g.const("pads", [[0, 0], [0, 0], [1, 1], [1, 1]], "int32")
    g.const("to_nhwc", [0, 2, 3, 1], "int32")
    g.const("to_nchw", [0, 3, 1, 2], "int32")
    g.const("w1", w1)
    g.const("w2", w2)
    last = "x"
    for i, w in enumerate(["w1", "w2"]):
        g.op(f"pad{i}", "Pad", [last, "pads"])
        g.op(f"t{i}", "Transpose", [f"pad{i}", "to_nhwc"])
        g.op(f"conv{i}", "Conv2D", [f"t{i}", w], padding=s_attr("VALID"), strides=ints(1, 1, 1, 1))
        g.op(f"back{i}", "Transpose", [f"conv{i}", "to_nchw"])
        g.op(f"act{i}", "LeakyRelu", [f"back{i}"], alpha={"f": 0.1})
        last = f"act{i}"
    (y,), model = run(g, [last], {"x": x})
    ref = x.transpose(0, 2, 3, 1)
    for w in (w1, w2):
        c = conv_ref(ref, w, 1, 1, (1, 1, 1, 1))
        ref = np.where(c > 0, c, 0.1 * c)
    np.testing.assert_allclose(y, ref.transpose(0, 3, 1, 2), atol=1e-3)
    ops = ops_of(model)
    assert ops["Transpose"] == 0 and ops["Pad"] == 0 and ops["Conv"] == 2


def test_float16_quantised_weights_are_read_as_float32():
    w = RNG.standard_normal((1, 1, 2, 2)).astype(np.float32)
    g = GraphBuilder()
    g.input("x", [1, 2, 2, 2])
    g.const("w", w, quant="float16")
    g.op("y", "Conv2D", ["x", "w"], padding=s_attr("VALID"), strides=ints(1, 1, 1, 1))
    x = RNG.standard_normal((1, 2, 2, 2))
    (y,), _ = run(g, ["y"], {"x": x})
    np.testing.assert_allclose(y, conv_ref(x, w.astype(np.float16).astype(np.float32), 1, 1, (0,) * 4), atol=1e-3)


def test_uint8_affine_quantisation():
    spec = [{"name": "w", "shape": [3], "dtype": "float32",
             "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}}]
    assert read_weights([{"weights": spec}], [bytes([0, 2, 255])])["w"].tolist() == [-1.0, 0.0, 126.5]


def test_conversion_is_deterministic():
    def build() -> str:
        g = GraphBuilder()
        g.input("x", [1, 4, 4, 1])
        g.const("w", np.arange(4, dtype=np.float32).reshape(1, 1, 1, 4))
        g.op("y", "Conv2D", ["x", "w"], padding=s_attr("VALID"), strides=ints(1, 1, 1, 1))
        return model_digest(convert(read_graph(*_pair(g.model(["y"])))))
    assert build() == build()


def _pair(m: tuple[dict, bytes]) -> tuple[dict, list[bytes]]:
    return m[0], [m[1]]


# ----- refusals ------------------------------------------------------------------------------------

def test_truncated_weights_are_refused():
    g = GraphBuilder()
    g.input("x", [1, 2])
    g.const("w", np.ones(8))
    model_json, data = g.model(["x"])
    with pytest.raises(ModelFormatError, match="truncated"):
        read_graph(model_json, [data[:-4]])


def test_extra_weight_bytes_are_refused():
    g = GraphBuilder()
    g.const("w", np.ones(2))
    g.input("x", [1, 2])
    model_json, data = g.model(["x"])
    with pytest.raises(ModelFormatError, match="the files hold"):
        read_graph(model_json, [data + b"\0" * 4])


def test_an_unsupported_op_is_named():
    g = GraphBuilder()
    g.input("x", [1, 4])
    g.op("y", "Softplus", ["x"])
    model_json, data = g.model(["y"])
    with pytest.raises(ModelFormatError, match="Softplus"):
        convert(read_graph(model_json, [data]))


def test_a_dynamic_input_shape_needs_one_given():
    g = GraphBuilder()
    g.input("x", [1, -1, 4, 1])
    g.op("y", "Sigmoid", ["x"])
    model_json, data = g.model(["y"])
    graph = read_graph(model_json, [data])
    with pytest.raises(ModelFormatError, match="static input shape"):
        convert(graph)
    assert convert(graph, input_shape=[1, 3, 4, 1]).graph.input[0].type.tensor_type.shape.dim[1].dim_value == 3


def test_not_a_graph_model():
    with pytest.raises(ModelFormatError, match="graph model"):
        read_graph(json.loads('{"format": "layers-model", "modelTopology": {}}'), [])


def test_free_dims_keep_resize_ratios_at_other_sizes():
    """Traced at 4x6, run at 8x10: the resize doubles whatever it is given, like the TF graph would."""
    g = GraphBuilder()
    g.input("x", [1, 4, 6, 2])
    g.const("size", [8, 12], "int32")
    g.op("y", "ResizeBilinear", ["x", "size"], half_pixel_centers={"b": True})
    model_json, data = g.model(["y"])
    model = convert(read_graph(model_json, [data]), free_dims=(1, 2))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for h, w in ((4, 6), (8, 10)):
        x = RNG.standard_normal((1, h, w, 2))
        (y,) = sess.run(None, {"x": x.astype(np.float32)})
        np.testing.assert_allclose(y, resize_ref(x, 2 * h, 2 * w, "half_pixel"), atol=TOL)
