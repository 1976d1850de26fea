"""The ``direction`` classifiers: logistic regression (``ridge``) and LightGBM (``lightgbm``).

Both give the logit ``z`` of up per window (framework) and export a graph ending in the
half-logits ``[-z/2, z/2]``, to which ``to_onnx`` appends the validation temperature (``Mul``)
and a ``Softmax``; ``training.direction`` says why and how they are used.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from atb_strategies.training.family import ModelFamily
from atb_strategies.training.onnx_graph import linear_onnx, wrap_flat
from atb_strategies.training.ridge import flatten

#: Inverse regularisation strengths of the logistic model (of standardised inputs).
CS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)


def labels(y: np.ndarray) -> np.ndarray:
    """1 (up) where the log return is > 0, else 0 (down)."""
    return (np.asarray(y) > 0).astype(np.int64)


def log_loss(p_up: np.ndarray, label: np.ndarray) -> float:
    p = np.clip(np.asarray(p_up, dtype=np.float64), 1e-12, 1 - 1e-12)
    return float(-np.mean(label * np.log(p) + (1 - label) * np.log(1 - p)))


def temperature(z: np.ndarray, s: float) -> np.ndarray:
    """``[down, up]`` probabilities ``softmax([-s z / 2, s z / 2])`` for logits ``z``."""
    up = 1.0 / (1.0 + np.exp(-s * np.asarray(z, dtype=np.float64)))
    return np.column_stack([1.0 - up, up])


@dataclass
class FittedClassifier:
    model: Any
    setting: float
    #: Validation log loss per setting tried (logistic ``C``) or the best round (LightGBM).
    scores: dict[str, float] = field(default_factory=dict)
    temperature: float = 1.0
    validation_log_loss_before: float = float("nan")
    validation_log_loss_after: float = float("nan")


class _Classifier(ModelFamily[FittedClassifier]):
    """Shared calibration, prediction and serialization of the direction classifiers."""

    framework_file = "model.pkl"

    def _logit(self, fitted: FittedClassifier, X: np.ndarray) -> np.ndarray:
        """The logit ``z`` of up (``p_up = sigmoid(z)``) per window, float64."""
        raise NotImplementedError

    def _half_logits_onnx(
        self, fitted: FittedClassifier, sequence_length: int, n_features: int
    ) -> bytes:
        """ONNX graph ``[N, seq, f]`` -> ``[-z/2, z/2]`` ``[N, 2]``."""
        raise NotImplementedError

    def _calibrate(self, fitted: FittedClassifier, X_val: np.ndarray, y_val: np.ndarray) -> None:
        raw = self._logit(fitted, X_val)
        label = labels(y_val)
        grid = np.linspace(0.0, 1.0, 101)
        losses = [log_loss(temperature(raw, s)[:, 1], label) for s in grid]
        best = int(np.argmin(losses))
        fitted.temperature = float(grid[best])
        fitted.validation_log_loss_before = log_loss(temperature(raw, 1.0)[:, 1], label)
        fitted.validation_log_loss_after = float(losses[best])

    def predict(self, fitted: FittedClassifier, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities ``[N, 2]`` (down, up), float64."""
        return temperature(self._logit(fitted, X), fitted.temperature)

    def to_onnx(self, fitted: FittedClassifier, sequence_length: int, n_features: int) -> bytes:
        """Probabilities ``[N, 2]``: ``Softmax(half_logits * temperature)``."""
        model = onnx.load_from_string(self._half_logits_onnx(fitted, sequence_length, n_features))
        graph = model.graph
        final = graph.output[0].name
        before = f"{final}_half_logits"
        for node in graph.node:
            node.output[:] = [before if o == final else o for o in node.output]
        graph.node.extend(
            [
                helper.make_node("Mul", [before, "temperature"], ["tempered"]),
                helper.make_node("Softmax", ["tempered"], [final], axis=1),
            ]
        )
        graph.initializer.append(
            numpy_helper.from_array(np.array([fitted.temperature], dtype=np.float32), "temperature")
        )
        onnx.checker.check_model(model)
        return model.SerializeToString()

    def serialize(self, fitted: FittedClassifier) -> bytes:
        return pickle.dumps(fitted, protocol=5)

    def selection(self, fitted: FittedClassifier) -> dict[str, Any]:
        return {
            "setting": fitted.setting,
            "validation_log_loss_by_setting": fitted.scores,
            "temperature": fitted.temperature,
            "validation_log_loss_before": fitted.validation_log_loss_before,
            "validation_log_loss_after": fitted.validation_log_loss_after,
        }


class LogisticFamily(_Classifier):
    """``ridge`` for ``direction``: L2 logistic regression, ``C`` picked on validation."""

    name = "ridge"

    @property
    def framework(self) -> str:
        import skl2onnx
        import sklearn

        return f"scikit-learn {sklearn.__version__} / skl2onnx {skl2onnx.__version__}"

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray,
        y_val: np.ndarray,
        *,
        seed: int,
        epochs: int,
    ) -> FittedClassifier:
        from sklearn.linear_model import LogisticRegression

        flat, flat_val, label_val = flatten(X), flatten(X_val), labels(y_val)
        best: FittedClassifier | None = None
        best_loss = np.inf
        scores: dict[str, float] = {}
        for c in CS:
            model = LogisticRegression(C=c, max_iter=1000).fit(flat, labels(y))
            loss = log_loss(model.predict_proba(flat_val)[:, 1], label_val)
            scores[f"{c:g}"] = loss
            if loss < best_loss:
                best, best_loss = FittedClassifier(model, c), loss
        assert best is not None
        best.scores = scores
        self._calibrate(best, X_val, y_val)
        return best

    def _logit(self, fitted: FittedClassifier, X: np.ndarray) -> np.ndarray:
        return flatten(X) @ fitted.model.coef_[0] + fitted.model.intercept_[0]

    def _half_logits_onnx(
        self, fitted: FittedClassifier, sequence_length: int, n_features: int
    ) -> bytes:
        w = np.asarray(fitted.model.coef_[0], dtype=np.float64) / 2
        coef = np.column_stack([-w, w]).astype(np.float32)
        b = float(fitted.model.intercept_[0]) / 2
        bias = np.array([-b, b], dtype=np.float32)
        return linear_onnx(coef, bias, sequence_length, n_features, name="atb_logistic")


class LightgbmClassifierFamily(_Classifier):
    """``lightgbm`` for ``direction``: a binary LGBMClassifier early-stopped on validation."""

    name = "lightgbm"

    @property
    def framework(self) -> str:
        import lightgbm
        import onnxmltools

        return f"lightgbm {lightgbm.__version__} / onnxmltools {onnxmltools.__version__}"

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray,
        y_val: np.ndarray,
        *,
        seed: int,
        epochs: int,
    ) -> FittedClassifier:
        import lightgbm

        from atb_strategies.training.boosting import MAX_ROUNDS, PATIENCE

        model = lightgbm.LGBMClassifier(
            n_estimators=MAX_ROUNDS,
            num_leaves=15,
            learning_rate=0.03,
            min_child_samples=100,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            reg_lambda=1.0,
            random_state=seed,
            deterministic=True,
            force_row_wise=True,
            n_jobs=1,
            verbose=-1,
        )
        model.fit(
            flatten(X),
            labels(y),
            eval_X=(flatten(X_val),),
            eval_y=(labels(y_val),),
            eval_metric="binary_logloss",
            callbacks=[lightgbm.early_stopping(PATIENCE, verbose=False)],
        )
        best = int(model.best_iteration_ or MAX_ROUNDS)
        fitted = FittedClassifier(model, float(best), {"best_iteration": float(best)})
        self._calibrate(fitted, X_val, y_val)
        return fitted

    def _logit(self, fitted: FittedClassifier, X: np.ndarray) -> np.ndarray:
        z = fitted.model.predict(flatten(X), raw_score=True, num_iteration=int(fitted.setting))
        return np.asarray(z, dtype=np.float64)

    def _half_logits_onnx(
        self, fitted: FittedClassifier, sequence_length: int, n_features: int
    ) -> bytes:
        """The tree ensemble without its logistic transform gives ``[-z, z]``; halved."""
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType

        inner = convert_lightgbm(
            fitted.model,
            initial_types=[("flat", FloatTensorType([None, sequence_length * n_features]))],
            target_opset=15,
            zipmap=False,
        )
        for node in inner.graph.node:
            if node.op_type == "TreeEnsembleClassifier":
                for attribute in node.attribute:
                    if attribute.name == "post_transform":
                        attribute.s = b"NONE"
        scores = inner.graph.output[1].name  # outputs: label, probabilities (now scores)
        return wrap_flat(
            inner,
            sequence_length,
            n_features,
            output=scores,
            scale=0.5,
            width=2,
            name="atb_lightgbm_direction",
        )
