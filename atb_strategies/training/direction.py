"""The ``direction`` target: probabilities of the classes ``[down, up]`` of the next move.

A bar's label is ``up`` when its next-``horizon`` log return is > 0, else ``down`` (a zero
return, rare on real data, counts as down). Two families can be trained for it and exported:

* ``ridge`` -> ``LogisticFamily``: L2-regularised logistic regression on the flattened window,
  its ``C`` picked on the validation part by log loss; exported as ``MatMul`` + ``Softmax``
  over the logits ``[0, z]`` (bit-identical across batch sizes, like ridge);
* ``lightgbm`` -> ``LightgbmClassifierFamily``: a binary LGBMClassifier early-stopped on the
  validation log loss, exported by onnxmltools (probabilities output).

Any other architecture with this target raises ``ConfigurationError``.

**Calibration** on the validation part is temperature scaling of the classifier's logit ``z``:
``p_up = sigmoid(s * z)`` with ``s`` in [0, 1] minimising the validation log loss on a grid of
101 values; like the regression calibration it only shrinks toward 50/50, never sharpens. Both
exported graphs end in the half-logits ``[-z/2, z/2]``; calibration is one ``Mul`` by ``s``
before the final ``Softmax``. (A ``Log`` of probabilities was tried first: onnxruntime's
vectorised ``Log`` gives a batch of one other last bits than a large batch, which the causality
gate refuses; ``MatMul``, trees, ``Mul`` and ``Softmax`` are bit-identical across batch sizes.)

**Gates and metrics.** The parity and causality gates and the test-part metrics work on one
number per window; for them a class model is read through its *implied return*
``(p_up - p_down) * mean |train return|`` (``ImpliedReturnView``): the same graph with one
``Sub``/``Mul`` appended. Its sign is the predicted direction, so directional accuracy and the
direction edge are exactly the classifier's; RMSE/MSE measure that implied return. The bundle
registers the class graph itself (``output.target: class_probabilities``, classes
``["down", "up"]``); no prediction drift reference is recorded for it (features only).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from atb_strategies.exceptions import ConfigurationError
from atb_strategies.training.classifiers import LightgbmClassifierFamily, LogisticFamily
from atb_strategies.training.family import ModelFamily, model_family

CLASSES = ("down", "up")
TARGETS = ("log_return", "direction")

#: Families that can be trained for ``direction`` and exported, by architecture.
CLASSIFIERS = {"ridge": LogisticFamily, "lightgbm": LightgbmClassifierFamily}


def family_for(architecture: str, target: str) -> ModelFamily:
    """The family of ``architecture`` for ``target`` (``log_return`` or ``direction``).

    Raises
    ------
    ConfigurationError
        Unknown architecture or target, missing extra, or a pair that cannot be exported.
    """
    if target not in TARGETS:
        raise ConfigurationError(
            "The 'target' parameter of TrainingConfig must be 'log_return' or 'direction'. "
            f"Got {target!r} instead."
        )
    family = model_family(architecture)  # unknown name or missing extra: its own message
    if target == "log_return":
        return family
    if architecture not in CLASSIFIERS:
        raise ConfigurationError(
            f"architecture={architecture!r} cannot be trained and exported for "
            "target='direction' (class probabilities); choose architecture="
            f"{' or '.join(map(repr, CLASSIFIERS))}."
        )
    return CLASSIFIERS[architecture]()


class ImpliedReturnView(ModelFamily[Any]):
    """A direction classifier read as one number per window for the gates and metrics:
    ``(p_up - p_down) * scale`` (``scale``: mean |train return|)."""

    def __init__(self, inner: ModelFamily, scale: float) -> None:
        self.inner = inner
        self.scale = scale
        self.name = inner.name
        self.framework_file = inner.framework_file

    @property
    def framework(self) -> str:
        return self.inner.framework

    def fit(  # pragma: no cover - the classifier is fitted directly
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray,
        y_val: np.ndarray,
        *,
        seed: int,
        epochs: int,
    ) -> Any:
        raise NotImplementedError

    def predict(self, fitted: Any, X: np.ndarray) -> np.ndarray:
        p = self.inner.predict(fitted, X)
        return (p[:, 1] - p[:, 0]) * self.scale

    def to_onnx(self, fitted: Any, sequence_length: int, n_features: int) -> bytes:
        model = onnx.load_from_string(self.inner.to_onnx(fitted, sequence_length, n_features))
        graph = model.graph
        probabilities = graph.output[0].name
        graph.node.extend(
            [
                helper.make_node("Split", [probabilities], ["p_down", "p_up"], axis=1),
                helper.make_node("Sub", ["p_up", "p_down"], ["p_diff"]),
                helper.make_node("Mul", ["p_diff", "implied_scale"], ["implied_return"]),
            ]
        )
        graph.initializer.append(
            numpy_helper.from_array(np.array([self.scale], dtype=np.float32), "implied_scale")
        )
        del graph.output[:]
        graph.output.append(
            helper.make_tensor_value_info("implied_return", onnx.TensorProto.FLOAT, ["batch", 1])
        )
        onnx.checker.check_model(model)
        return model.SerializeToString()

    def serialize(self, fitted: Any) -> bytes:
        return self.inner.serialize(fitted)
