"""Read and patch ONNX model files without the ``onnx`` package (it has no Pyodide build).

An ONNX file is one protobuf ``ModelProto`` message. The few things the page
needs, to fine-tune a model's last layer and save the result, take only the
protobuf wire format:

* :func:`find_head`: the 1x1 convolution that makes the model's class scores,
  its weights, and the tensor it reads (the features);
* :func:`with_outputs`: the same model with more graph outputs (the features);
* :func:`replace_initializers`: new values for weights of the same shape;
* :func:`with_metadata` / :func:`read_metadata`: key-value pairs in
  ``metadata_props`` (what a model was adapted on, its diameter...).

Protobuf lets fields come in any order and concatenates repeated ones, so a
message gains a field by appending it; everything not touched is copied as
bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["OnnxFileError", "Head", "find_head", "with_outputs", "replace_initializers",
           "with_metadata", "read_metadata"]

# field numbers of onnx.proto3
_MODEL_GRAPH, _MODEL_METADATA = 7, 14
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_OUTPUT = 1, 5, 12
_NODE_INPUT, _NODE_OUTPUT, _NODE_OP_TYPE, _NODE_ATTRIBUTE = 1, 2, 4, 5
_ATTR_NAME, _ATTR_I, _ATTR_S = 1, 3, 4
_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_FLOAT_DATA, _TENSOR_NAME, _TENSOR_RAW_DATA = 1, 2, 4, 8, 9
_FLOAT = 1  # TensorProto.FLOAT
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


class OnnxFileError(ValueError):
    """The bytes are not an ONNX model of the kind asked for."""


def _varint(buf, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise OnnxFileError("truncated ONNX file")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise OnnxFileError("corrupt ONNX file (bad varint)")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf, start: int = 0, end: int | None = None):
    """``(field number, wire type, value, start, end)`` of each field of one message;
    ``value`` is an int, or ``(offset, length)`` of a length-delimited payload."""
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        first = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _FIXED64:
            value, pos = pos, pos + 8
        elif wire == _FIXED32:
            value, pos = pos, pos + 4
        elif wire == _BYTES:
            length, pos = _varint(buf, pos)
            value, pos = (pos, length), pos + length
        else:
            raise OnnxFileError(f"corrupt ONNX file (wire type {wire})")
        if pos > end:
            raise OnnxFileError("truncated ONNX file")
        yield number, wire, value, first, pos


def _field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | _BYTES) + _encode_varint(len(payload)) + payload


def _text(buf, value) -> str:
    offset, length = value
    return bytes(buf[offset:offset + length]).decode("utf-8", "replace")


def _graph(buf) -> tuple[int, int, int, int]:
    """``(field start, field end, payload offset, payload length)`` of the model's graph."""
    for number, wire, value, first, last in _fields(buf):
        if number == _MODEL_GRAPH and wire == _BYTES:
            return first, last, value[0], value[1]
    raise OnnxFileError("not an ONNX model (no graph)")


@dataclass
class _Node:
    op_type: str
    inputs: list
    outputs: list
    attributes: dict  #: integer and string attributes by name


def _nodes(buf, offset: int, length: int) -> list[_Node]:
    nodes = []
    for number, wire, value, _, _ in _fields(buf, offset, offset + length):
        if number != _GRAPH_NODE or wire != _BYTES:
            continue
        node = _Node("", [], [], {})
        for n, w, v, _, _ in _fields(buf, value[0], value[0] + value[1]):
            if w != _BYTES:
                continue
            if n == _NODE_INPUT:
                node.inputs.append(_text(buf, v))
            elif n == _NODE_OUTPUT:
                node.outputs.append(_text(buf, v))
            elif n == _NODE_OP_TYPE:
                node.op_type = _text(buf, v)
            elif n == _NODE_ATTRIBUTE:
                name, found = "", None
                for an, aw, av, _, _ in _fields(buf, v[0], v[0] + v[1]):
                    if an == _ATTR_NAME and aw == _BYTES:
                        name = _text(buf, av)
                    elif an == _ATTR_I and aw == _VARINT:
                        found = av
                    elif an == _ATTR_S and aw == _BYTES:
                        found = _text(buf, av)
                if found is not None:
                    node.attributes[name] = found
        nodes.append(node)
    return nodes


def _initializers(buf, offset: int, length: int) -> dict:
    """``{name: (field start, field end, payload offset, payload length)}`` of the graph's initializers."""
    found = {}
    for number, wire, value, first, last in _fields(buf, offset, offset + length):
        if number == _GRAPH_INITIALIZER and wire == _BYTES:
            for n, w, v, _, _ in _fields(buf, value[0], value[0] + value[1]):
                if n == _TENSOR_NAME and w == _BYTES:
                    found[_text(buf, v)] = (first, last) + value
                    break
    return found


def _tensor(buf, offset: int, length: int) -> np.ndarray:
    dims, dtype, raw, floats = [], None, None, []
    for n, w, v, _, _ in _fields(buf, offset, offset + length):
        if n == _TENSOR_DIMS:
            if w == _VARINT:
                dims.append(v)
            else:  # packed
                pos, end = v[0], v[0] + v[1]
                while pos < end:
                    d, pos = _varint(buf, pos)
                    dims.append(d)
        elif n == _TENSOR_DATA_TYPE:
            dtype = v
        elif n == _TENSOR_RAW_DATA and w == _BYTES:
            raw = bytes(buf[v[0]:v[0] + v[1]])
        elif n == _TENSOR_FLOAT_DATA:
            if w == _BYTES:
                floats.append(np.frombuffer(bytes(buf[v[0]:v[0] + v[1]]), "<f4"))
            else:
                floats.append(np.frombuffer(bytes(buf[v:v + 4]), "<f4"))
    if dtype != _FLOAT:
        raise OnnxFileError(f"tensor of ONNX data type {dtype}, not float32")
    data = np.frombuffer(raw, "<f4") if raw is not None else np.concatenate(floats or [np.zeros(0, "<f4")])
    return data.astype(np.float32).reshape(dims)


def _tensor_bytes(name: str, array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, "<f4")
    dims = b"".join(_encode_varint(_TENSOR_DIMS << 3 | _VARINT) + _encode_varint(d) for d in array.shape)
    return (dims + _encode_varint(_TENSOR_DATA_TYPE << 3 | _VARINT) + _encode_varint(_FLOAT)
            + _field(_TENSOR_NAME, name.encode()) + _field(_TENSOR_RAW_DATA, array.tobytes()))


@dataclass
class Head:
    """The last layer of a segmentation model: a 1x1 convolution from features to class scores,
    followed by an optional depth-to-space (``block`` > 1) and a softmax."""
    features: str        #: name of the tensor the head reads
    weight_name: str
    bias_name: str
    weight: np.ndarray   #: (classes * block**2, feature channels)
    bias: np.ndarray     #: (classes * block**2,)
    block: int           #: depth-to-space block size (1: none)

    @property
    def classes(self) -> int:
        return self.weight.shape[0] // (self.block * self.block)


def find_head(model: bytes) -> Head:
    """The head of a model ending in ``Conv(1x1) [-> DepthToSpace (CRD)] -> softmax``.

    Raises
    ------
    OnnxFileError
        When the model does not end that way, or its head is not float32
        (e.g. an int8-quantized model).
    """
    buf = memoryview(model)
    _, _, offset, length = _graph(buf)
    nodes = _nodes(buf, offset, length)
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    if not convs:
        raise OnnxFileError("the model has no convolution")
    conv = nodes[convs[-1]]
    if len(conv.inputs) != 3:
        raise OnnxFileError("the model's last convolution has no bias")
    block = 1
    after = [n for n in nodes[convs[-1] + 1:] if conv.outputs[0] in n.inputs]
    if after and after[0].op_type == "DepthToSpace":
        block = int(after[0].attributes.get("blocksize", 1))
        if after[0].attributes.get("mode", "DCR") != "CRD":
            raise OnnxFileError("the model's depth-to-space is not in CRD mode")
    inits = _initializers(buf, offset, length)
    if conv.inputs[1] not in inits or conv.inputs[2] not in inits:
        raise OnnxFileError("the model's last layer is not a plain float convolution "
                            "(quantized models cannot be taught; use the float32 model)")
    weight = _tensor(buf, *inits[conv.inputs[1]][2:])
    bias = _tensor(buf, *inits[conv.inputs[2]][2:])
    if weight.ndim != 4 or weight.shape[2:] != (1, 1):
        raise OnnxFileError(f"the model's last convolution has a {weight.shape[2:]} kernel, not 1x1")
    return Head(conv.inputs[0], conv.inputs[1], conv.inputs[2], weight[:, :, 0, 0].copy(), bias.copy(), block)


def _replace_graph(buf, graph_payload: bytes) -> bytes:
    first, last, _, _ = _graph(buf)
    return bytes(buf[:first]) + _field(_MODEL_GRAPH, graph_payload) + bytes(buf[last:])


def with_outputs(model: bytes, names) -> bytes:
    """The model with the float32 4-D tensors ``names`` as extra graph outputs (sizes left symbolic)."""
    buf = memoryview(model)
    _, _, offset, length = _graph(buf)
    # ValueInfoProto {name, type: TypeProto {tensor_type: {elem_type: FLOAT, shape: 4 named dims}}}
    def value_info(k, name):
        shape = b"".join(_field(1, _field(2, f"out{k}_d{i}".encode())) for i in range(4))
        tensor = _encode_varint(1 << 3 | _VARINT) + _encode_varint(_FLOAT) + _field(2, shape)
        return _field(1, name.encode()) + _field(2, _field(1, tensor))

    extra = b"".join(_field(_GRAPH_OUTPUT, value_info(k, name)) for k, name in enumerate(names))
    return _replace_graph(buf, bytes(buf[offset:offset + length]) + extra)


def replace_initializers(model: bytes, values: dict) -> bytes:
    """The model with new float32 values for initializers of the same shape, ``{name: array}``."""
    buf = memoryview(model)
    _, _, offset, length = _graph(buf)
    inits = _initializers(buf, offset, length)
    pieces, pos = [], offset
    for name in sorted(values, key=lambda k: inits[k][0] if k in inits else -1):
        if name not in inits:
            raise OnnxFileError(f"the model has no initializer {name!r}")
        first, last, t_offset, t_length = inits[name]
        old = _tensor(buf, t_offset, t_length)
        new = np.asarray(values[name], np.float32)
        if new.size != old.size:
            raise OnnxFileError(f"{name!r} has {old.size} values, not {new.size}")
        pieces += [bytes(buf[pos:first]), _field(_GRAPH_INITIALIZER, _tensor_bytes(name, new.reshape(old.shape)))]
        pos = last
    pieces.append(bytes(buf[pos:offset + length]))
    return _replace_graph(buf, b"".join(pieces))


def with_metadata(model: bytes, metadata: dict) -> bytes:
    """The model with ``metadata`` (str -> str) added to its ``metadata_props``."""
    extra = b"".join(_field(_MODEL_METADATA, _field(1, str(k).encode()) + _field(2, str(v).encode()))
                     for k, v in metadata.items())
    return bytes(model) + extra


def read_metadata(model: bytes) -> dict:
    """The model's ``metadata_props`` as a dict (later entries win)."""
    buf = memoryview(model)
    found = {}
    for number, wire, value, _, _ in _fields(buf):
        if number == _MODEL_METADATA and wire == _BYTES:
            key = val = ""
            for n, w, v, _, _ in _fields(buf, value[0], value[0] + value[1]):
                if w == _BYTES and n == 1:
                    key = _text(buf, v)
                elif w == _BYTES and n == 2:
                    val = _text(buf, v)
            found[key] = val
    return found
