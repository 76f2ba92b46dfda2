"""Reading a TensorFlow.js graph model: its node list and its weights, as plain Python and numpy.

A TF.js "graph-model" is a `model.json` whose `modelTopology.node` is a TensorFlow GraphDef written
as JSON (name, op, input, attr) and whose `weightsManifest` lists every constant, stored back to back
in one or more `.bin` shards in manifest order. A float32 weight may be stored quantised (float16, or
uint8/uint16 with a scale and a minimum); int64 constants are stored as int32.

Pure: bytes and dicts in, arrays out. Errors are `ModelFormatError` naming what is wrong.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.errors import ConfigError

MAX_NODES = 100_000
MAX_WEIGHT_BYTES = 1 << 30

_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANT = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}


class ModelFormatError(ConfigError):
    """A model file is not what its format promises (a truncated weight file, an unknown dtype)."""


@dataclass(frozen=True)
class TfNode:
    """One GraphDef node: `inputs` are (producer name, output index) pairs; control inputs dropped."""

    name: str
    op: str
    inputs: tuple[tuple[str, int], ...]
    attr: Mapping[str, Any] = field(default_factory=dict)

    def attr_int_list(self, key: str) -> list[int]:
        """An attribute that is a list of ints (strides, ksize, dilations)."""
        return [int(v) for v in self.attr.get(key, {}).get("list", {}).get("i", [])]

    def attr_str(self, key: str, default: str = "") -> str:
        """A string attribute (GraphDef JSON keeps them base64)."""
        value = self.attr.get(key, {}).get("s")
        return base64.b64decode(value).decode("ascii") if value is not None else default

    def attr_bool(self, key: str, default: bool = False) -> bool:
        """A boolean attribute."""
        return bool(self.attr.get(key, {}).get("b", default))

    def attr_float(self, key: str, default: float) -> float:
        """A float attribute."""
        return float(self.attr.get(key, {}).get("f", default))


@dataclass(frozen=True)
class TfGraph:
    """A whole graph model: nodes in file order, constants by name, and the named inputs/outputs."""

    nodes: tuple[TfNode, ...]
    weights: Mapping[str, np.ndarray]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def parse_input(text: str) -> tuple[str, int] | None:
    """`name`, `name:1` or a control input `^name` (None: ordering only, no data)."""
    if text.startswith("^"):
        return None
    name, _, index = text.partition(":")
    return name, int(index) if index else 0


def read_graph(model: Mapping[str, Any], shards: Sequence[bytes]) -> TfGraph:
    """The graph of a parsed model.json with its weight shards' bytes, in the manifest's order."""
    if model.get("format") not in (None, "graph-model"):
        raise ModelFormatError(f"not a TF.js graph model (format {model.get('format')!r})")
    raw_nodes = model.get("modelTopology", {}).get("node")
    if not isinstance(raw_nodes, list) or not raw_nodes or len(raw_nodes) > MAX_NODES:
        raise ModelFormatError("modelTopology.node must be a non-empty list of nodes")
    nodes = tuple(_node(n) for n in raw_nodes)
    weights = read_weights(model.get("weightsManifest", []), shards)
    inputs = tuple(n.name for n in nodes if n.op == "Placeholder")
    return TfGraph(nodes, weights, inputs, _outputs(model, nodes))


def _node(raw: Mapping[str, Any]) -> TfNode:
    try:
        inputs = tuple(p for p in (parse_input(str(s)) for s in raw.get("input", [])) if p is not None)
        return TfNode(str(raw["name"]), str(raw["op"]), inputs, raw.get("attr", {}))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFormatError(f"malformed node {str(raw)[:120]}: {e}") from e


def _outputs(model: Mapping[str, Any], nodes: Sequence[TfNode]) -> tuple[str, ...]:
    """The signature's outputs in name order, else every node nobody consumes."""
    sig = model.get("signature", {}).get("outputs", {})
    if sig:
        return tuple(sorted((v.get("name", k).partition(":")[0] for k, v in sig.items()), key=_natural))
    used = {name for n in nodes for name, _ in n.inputs}
    return tuple(n.name for n in nodes if n.name not in used and n.op != "Const")


def _natural(name: str) -> tuple[str, int]:
    """`Identity` < `Identity_1` < `Identity_2` < `Identity_10`."""
    stem, _, num = name.rpartition("_")
    return (stem, int(num)) if stem and num.isdigit() else (name, -1)


def read_weights(manifest: Sequence[Mapping[str, Any]], shards: Sequence[bytes]) -> dict[str, np.ndarray]:
    """Every weight of the manifest groups, read from the shards (one list of shards per group,
    concatenated in order here: callers pass each path's bytes in manifest order)."""
    data = b"".join(shards)
    if len(data) > MAX_WEIGHT_BYTES:
        raise ModelFormatError(f"weights are {len(data)} bytes, over the {MAX_WEIGHT_BYTES} limit")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for group in manifest:
        for spec in group.get("weights", []):
            array, size = _weight(spec, data, offset)
            out[spec["name"]] = array
            offset += size
    if offset != len(data):
        raise ModelFormatError(f"the manifest describes {offset} bytes of weights, the files hold {len(data)}")
    return out


def _weight(spec: Mapping[str, Any], data: bytes, offset: int) -> tuple[np.ndarray, int]:
    """One weight at `offset` and how many bytes it takes."""
    name, dtype, shape = spec.get("name"), spec.get("dtype"), [int(d) for d in spec.get("shape", [])]
    if dtype not in _DTYPES:
        raise ModelFormatError(f"weight {name!r}: dtype {dtype!r} is not supported")
    count = int(np.prod(shape)) if shape else 1
    quant = spec.get("quantization")
    stored = np.dtype(_QUANT[quant["dtype"]]) if quant else np.dtype(_DTYPES[dtype])
    size = count * stored.itemsize
    if offset + size > len(data):
        raise ModelFormatError(f"weight {name!r} runs past the end of the weight files (truncated download?)")
    values = np.frombuffer(data, stored, count, offset).astype(_DTYPES[dtype])
    if quant and quant["dtype"] != "float16":
        values = values * np.float32(quant["scale"]) + np.float32(quant.get("min", 0.0))
    return values.reshape(shape).astype(_DTYPES[dtype]), size
