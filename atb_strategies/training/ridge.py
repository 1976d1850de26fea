"""``ridge``: an L2-regularised linear model on the flattened window, the honest baseline family.

Why: with the ``lags`` recipe the flattened window holds the last ``sequence_length`` log
returns, so autoregressive structure is one coefficient away; ridge fits in milliseconds,
is deterministic, and its export is exact: ``Flatten -> MatMul -> Add`` with the coefficients as
float32. (skl2onnx's ``LinearRegressor`` node was tried first: onnxruntime gives a batch of one
a result differing in the last bit from the same row inside a larger batch, which the causality
gate, rightly strict, refuses; ``MatMul`` is bit-identical across batch sizes.)

The regularisation strength is chosen on the validation part (later in time than every training
bar): each ``alpha`` of ``alphas`` is fitted on the train part and the one with the lowest
validation MSE is kept (the grid and every score are kept on the fitted object and recorded in
lineage). Inputs are used as the recipe gives them (standardised with train-only statistics).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atb_strategies.training.family import ModelFamily
from atb_strategies.training.onnx_graph import linear_onnx

#: Regularisation strengths tried (relative to ``n_samples``: the penalty is ``alpha * n``
#: times the squared coefficients, so the same grid suits any part length).
ALPHAS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)


def flatten(X: np.ndarray) -> np.ndarray:
    """``[N, seq, f]`` windows as float64 rows ``[N, seq * f]`` (the ONNX ``Flatten`` order)."""
    return X.reshape(len(X), -1).astype(np.float64)


@dataclass
class FittedRidge:
    model: Any
    alpha: float
    #: Validation MSE of every alpha tried.
    scores: dict[str, float] = field(default_factory=dict)


class RidgeFamily(ModelFamily[FittedRidge]):
    """``ridge``: scikit-learn ``Ridge`` on flattened windows, alpha picked on validation."""

    name = "ridge"
    framework_file = "model.pkl"

    def __init__(self, alphas: tuple[float, ...] = ALPHAS) -> None:
        self.alphas = alphas

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
    ) -> FittedRidge:
        """Fit one ridge per alpha on the train part; keep the best on the validation part.

        ``seed`` and ``epochs`` do not apply (the solution is closed-form).
        """
        from sklearn.linear_model import Ridge

        flat, flat_val = flatten(X), flatten(X_val)
        best: FittedRidge | None = None
        best_mse = np.inf
        scores: dict[str, float] = {}
        for alpha in self.alphas:
            model = Ridge(alpha=alpha * len(flat), solver="cholesky").fit(flat, y)
            mse = float(np.mean((model.predict(flat_val) - y_val) ** 2))
            scores[f"{alpha:g}"] = mse
            if mse < best_mse:
                best, best_mse = FittedRidge(model, alpha), mse
        assert best is not None
        best.scores = scores
        return best

    def predict(self, fitted: FittedRidge, X: np.ndarray) -> np.ndarray:
        """Framework predictions (float64 log returns) for float32 windows."""
        return fitted.model.predict(flatten(X)).astype(np.float64)

    def to_onnx(self, fitted: FittedRidge, sequence_length: int, n_features: int) -> bytes:
        """ONNX graph: [N, seq, f] float32 -> Flatten -> MatMul(coef) + intercept -> [N, 1]."""
        coef = np.asarray(fitted.model.coef_, dtype=np.float32).reshape(-1, 1)
        intercept = float(fitted.model.intercept_)
        return linear_onnx(coef, intercept, sequence_length, n_features, name="atb_ridge")

    def serialize(self, fitted: FittedRidge) -> bytes:
        """The pickled scikit-learn model with its alpha and validation scores."""
        return pickle.dumps(fitted, protocol=5)

    def selection(self, fitted: FittedRidge) -> dict[str, Any]:
        """What was chosen on the validation part (lineage)."""
        return {"alpha": fitted.alpha, "validation_mse_by_alpha": fitted.scores}
