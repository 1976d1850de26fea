"""Stage 5, gates: ONNX export, export parity and causality; a model failing one is refused.

* **parity**: the framework model and the exported ONNX model predict every test window; the
  largest absolute difference is recorded, and above ``parity_tolerance`` training fails;
* **causality**: predictions recomputed from history truncated right after a few test bars must
  equal the full-series ones bit for bit, or training fails (some feature looks ahead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd

from atb_strategies.bundle.format import FeatureSchema
from atb_strategies.exceptions import TrainingError
from atb_strategies.features.pipeline import FeaturePipeline
from atb_strategies.training.dataset import Part
from atb_strategies.training.family import ModelFamily
from atb_strategies.training.logger import log

#: Test bars whose predictions are recomputed from truncated history.
CAUSALITY_PICKS = 8


@dataclass(frozen=True)
class GateResult:
    """A model that passed the gates.

    Attributes
    ----------
    model_bytes : bytes
        The exported ONNX model.
    test_predictions : numpy.ndarray
        ONNX predictions (float64 log returns) on the test windows.
    parity : float
        Largest ``|framework - onnx|`` over the test windows.
    causality_checks : int
        Truncated-history predictions found identical.
    """

    model_bytes: bytes
    test_predictions: np.ndarray
    parity: float
    causality_checks: int


def onnx_predict(model_bytes: bytes, X: np.ndarray) -> np.ndarray:
    """Predictions of the ONNX model (one thread, CPU) for float32 windows, as float64 ``[N]``."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model_bytes, sess_options=opts, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    out = [session.run(None, {name: X[i : i + 4096]})[0] for i in range(0, len(X), 4096)]
    return np.concatenate(out).reshape(len(X)).astype(np.float64)


def check_parity(framework_pred: np.ndarray, onnx_pred: np.ndarray, tolerance: float) -> float:
    """Largest ``|framework - onnx|``; raises ``TrainingError`` above ``tolerance``."""
    parity = float(np.max(np.abs(framework_pred - onnx_pred)))
    log.info(
        "export parity: max |framework - onnx| = %.3g over %d test windows (tolerance %g)",
        parity,
        len(onnx_pred),
        tolerance,
    )
    if not parity <= tolerance:
        raise TrainingError(
            f"ONNX export differs from the trained model by {parity:.3g} (> tolerance "
            f"{tolerance:g}) on the test windows; the model is not registered."
        )
    return parity


def causality_check(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    model_bytes: bytes,
    end_index: np.ndarray,
    full: np.ndarray,
) -> int:
    """Recompute predictions at a few test bars from history truncated right after them.

    Returns the number of bars checked; raises ``TrainingError`` at the first prediction that
    differs from ``full`` (the full-series prediction at ``end_index``).
    """
    pipe = FeaturePipeline(schema)
    cols = {c: frame[c].to_numpy(dtype=np.float64) for c in pipe.columns}
    n = min(CAUSALITY_PICKS, len(end_index))
    picks = np.unique(np.linspace(0, len(end_index) - 1, num=n).astype(int))
    for k in picks:
        e = int(end_index[k])
        part = pipe.batch_windows({c: v[: e + 1] for c, v in cols.items()}, start=e)
        again = onnx_predict(model_bytes, part.windows[-1:].astype(np.float32))[0]
        if again != full[k]:
            raise TrainingError(
                f"Causality check failed at bar {frame.index[e]}: the prediction from history "
                f"ending there is {again!r}, but the full-series run gave {full[k]!r}. Some "
                "feature uses bars after the decision bar; the model is not registered."
            )
    return len(picks)


def run_gates(
    family: ModelFamily,
    fitted: Any,
    frame: pd.DataFrame,
    schema: FeatureSchema,
    test: Part,
    tolerance: float,
) -> GateResult:
    """Export ``fitted`` to ONNX and pass it through the parity and causality gates.

    Raises
    ------
    TrainingError
        If a gate fails (the model must not be registered).
    """
    model_bytes = family.to_onnx(fitted, schema.sequence_length, len(schema.features))
    framework_pred = family.predict(fitted, test.X)
    onnx_pred = onnx_predict(model_bytes, test.X)
    parity = check_parity(framework_pred, onnx_pred, tolerance)
    checked = causality_check(frame, schema, model_bytes, test.end_index, onnx_pred)
    log.info("causality check: %d truncated-history predictions identical", checked)
    return GateResult(model_bytes, onnx_pred, parity, checked)
