"""Run a bundle's model once, as use runs it, before anything relies on it.

Opening an ONNX session checks the graph's declared tensors, not what it does: a ``Reshape`` to
a fixed size, a node that fails for some batch sizes, an output of another length than declared
all pass the open and fail at the first bar. ``smoke_run`` feeds the model the batch sizes use
feeds it (two windows, as a single prediction runs with batch parity; three, as a batch's last
chunk may; one when batch parity is off) and decodes the outputs, so such a bundle is refused
when it is selected or validated, with the reason, instead of mid-session.

The windows are synthetic (a smooth ramp in [0, 1] of the declared shape): the point is that
the graph runs and its outputs have the declared shape, not what they are.
"""

from __future__ import annotations

import numpy as np

from atb_strategies.bundle.safeio import shown
from atb_strategies.exceptions import BundleError
from atb_strategies.inference.decode import decode
from atb_strategies.inference.runner import OnnxRunner


def synthetic_windows(n: int, sequence_length: int, n_features: int) -> np.ndarray:
    """``n`` float32 windows of the given shape, each a different smooth ramp in [0, 1]."""
    size = n * sequence_length * n_features
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float64).reshape(n, sequence_length, n_features)
    return np.ascontiguousarray(ramp, dtype=np.float32)


def smoke_run(runner: OnnxRunner) -> None:
    """Run a bundle's model (its runner) on synthetic windows of each batch size use runs.

    Raises
    ------
    BundleError
        Naming the model file, the batch size and what ONNX Runtime (or the output check) said.
    """
    spec = runner.input_spec
    sizes = (2, 3) if runner.batch_parity else (1, 2, 3)
    for n in sizes:
        x = synthetic_windows(n, spec.sequence_length, spec.n_features)
        try:
            raw = runner.run_raw(x)
            decode(runner.output_spec, raw, None, runner.direction_threshold)
        except BundleError:
            raise
        except Exception as e:  # whatever ONNX Runtime or numpy raise for this graph
            raise BundleError(
                f"{runner.model_path} opens but fails when run on a batch of {n} window(s) of "
                f"shape [{spec.sequence_length}, {spec.n_features}]: {type(e).__name__}: "
                f"{shown(str(e), 300)}. It would fail at the first bar; fix the model's graph "
                "and retrain the bundle.",
                path=runner.model_path,
            ) from e
