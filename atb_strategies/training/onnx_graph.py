"""ONNX plumbing shared by the model families: the bundle's input/output around a converted model.

Converters (skl2onnx, onnxmltools) export a model of flat rows ``[N, seq * f]``. Bundles take
windows ``[N, seq, f]`` float32 and give ``[N, 1]`` (regression) or ``[N, k]`` (class
probabilities). ``wrap_flat`` puts a ``Flatten`` in front of the converted graph and an affine
``* scale + offset`` behind it (target scaling undone, calibration folded in);
``append_affine`` adds one more ``Mul``/``Add`` to a finished model (validation calibration).
Every step is elementwise or row-wise, so a window's output never depends on the other windows
of the batch (the causality gate compares a batch of one with the full batch bit for bit).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT_NAME = "features"
OUTPUT_NAME = "prediction"
OPSET = 17


def _opsets(inner: onnx.ModelProto) -> list[onnx.OperatorSetIdProto]:
    """The inner model's opset imports, the default domain at ``OPSET`` at least."""
    out = {o.domain: o.version for o in inner.opset_import}
    out[""] = max(out.get("", OPSET), OPSET)
    return [helper.make_opsetid(domain, version) for domain, version in sorted(out.items())]


def _finish(graph: onnx.GraphProto, opsets: list[onnx.OperatorSetIdProto]) -> bytes:
    model = helper.make_model(graph, opset_imports=opsets, producer_name="atb-strategies")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def wrap_flat(
    inner: onnx.ModelProto,
    sequence_length: int,
    n_features: int,
    *,
    output: str | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
    width: int = 1,
    name: str = "atb_model",
) -> bytes:
    """``[N, seq, f]`` -> Flatten -> ``inner`` (its input renamed) -> ``* scale + offset``.

    ``inner`` takes one float input ``[N, seq * f]``; ``output`` names the output used (default
    its first), of ``width`` columns (1 for a regression, k for class probabilities).
    """
    graph = inner.graph
    flat_name = graph.input[0].name
    used = output or graph.output[0].name
    nodes = [helper.make_node("Flatten", [INPUT_NAME], [flat_name], axis=1), *graph.node]
    nodes += [
        helper.make_node("Reshape", [used, "out_shape"], ["reshaped"]),
        helper.make_node("Mul", ["reshaped", "out_scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "out_offset"], [OUTPUT_NAME]),
    ]
    out = helper.make_graph(
        nodes,
        name,
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, ["batch", sequence_length, n_features]
            )
        ],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", width])],
        initializer=[
            *graph.initializer,
            numpy_helper.from_array(np.array([-1, width], dtype=np.int64), "out_shape"),
            numpy_helper.from_array(np.array([scale], dtype=np.float32), "out_scale"),
            numpy_helper.from_array(np.array([offset], dtype=np.float32), "out_offset"),
        ],
    )
    return _finish(out, _opsets(inner))


def append_affine(model_bytes: bytes, slope: float, shift: float) -> bytes:
    """The model with its single output replaced by ``output * slope + shift`` (same name)."""
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    final = graph.output[0].name
    before = f"{final}_uncalibrated"
    for node in graph.node:
        node.output[:] = [before if o == final else o for o in node.output]
    graph.node.extend(
        [
            helper.make_node("Mul", [before, "calibration_slope"], ["calibrated_scaled"]),
            helper.make_node("Add", ["calibrated_scaled", "calibration_shift"], [final]),
        ]
    )
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([slope], dtype=np.float32), "calibration_slope"),
            numpy_helper.from_array(np.array([shift], dtype=np.float32), "calibration_shift"),
        ]
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def linear_onnx(
    coef: np.ndarray,
    intercept: float | np.ndarray,
    sequence_length: int,
    n_features: int,
    *,
    softmax: bool = False,
    name: str = "atb_linear",
) -> bytes:
    """``[N, seq, f]`` -> Flatten -> ``MatMul(coef) + intercept`` (-> ``Softmax``) -> ``[N, k]``.

    ``coef`` is ``[seq * f, k]``. ``MatMul`` gives a row the same bits whatever the batch size.
    """
    width = coef.shape[1]
    bias = np.asarray(intercept, dtype=np.float32).reshape(width)
    nodes = [
        helper.make_node("Flatten", [INPUT_NAME], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "coef"], ["product"]),
        helper.make_node("Add", ["product", "intercept"], ["logits" if softmax else OUTPUT_NAME]),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=1))
    graph = helper.make_graph(
        nodes,
        name,
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, ["batch", sequence_length, n_features]
            )
        ],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", width])],
        initializer=[
            numpy_helper.from_array(coef.astype(np.float32), "coef"),
            numpy_helper.from_array(bias, "intercept"),
        ],
    )
    return _finish(graph, [helper.make_opsetid("", OPSET)])
