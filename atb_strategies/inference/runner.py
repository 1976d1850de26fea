"""ONNX runner: one ``onnxruntime.InferenceSession`` per bundle, checked inputs, decoded outputs.

The session is opened on first use and re-created after ``copy``/``pickle`` (it is never
pickled), so strategies holding a runner work with backtrader's optimiser.

Batch parity: ONNX Runtime may compute a window differently at batch size 1 than inside a
larger batch (different matrix kernels: the reference LSTM differs by up to 1.8e-7). With
``batch_parity=True`` (the default) ``predict`` runs the window as a batch of two identical rows,
which takes the batched kernels, so a streaming prediction equals the batched prediction of the
same window bit for bit and a live run reproduces its backtest exactly; ``predict_batch`` runs a
batch (or a last chunk) of one window the same way. It costs up to ~1.5x per call on that LSTM
(nothing on the MLPs this project trains); ``batch_parity=False`` trades the exactness for the
faster batch-1 call.

Threads: ``intra_op_num_threads`` defaults to 1. On the 2-core machines this project targets, a
default session's thread pool made batch-1 inference about 3x slower, and two optimiser workers
each with a multi-threaded session oversubscribe the CPU. Raise it for large batches.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atb_strategies.bundle.format import InputSpec, OutputSpec
from atb_strategies.exceptions import BundleError, ConfigurationError, InferenceError
from atb_strategies.features.pipeline import PriceContext
from atb_strategies.inference.decode import decode

#: Windows per ``session.run`` call in ``predict_batch``; bounds memory for long series.
DEFAULT_CHUNK = 4096


_FLOAT32 = np.dtype(np.float32)


def _shape_text(want: tuple[int, int], batched: bool) -> str:
    return f"(n, {want[0]}, {want[1]})" if batched else f"({want[0]}, {want[1]})"


def resolve_providers(providers: str | Sequence[str] | None) -> list[str]:
    """Turn ``"cpu"``, ``"auto"`` (CUDA when present, else CPU) or a list into provider names."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers is None or providers == "cpu":
        return ["CPUExecutionProvider"]
    if providers == "auto":
        wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return [p for p in wanted if p in available]
    if isinstance(providers, str):
        providers = [p.strip() for p in providers.split(",") if p.strip()]
    missing = [p for p in providers if p not in available]
    if missing:
        raise ConfigurationError(
            f"ONNX Runtime provider(s) {missing} are not available here; available: {available}. "
            "Use 'cpu', 'auto' or one of the available names."
        )
    return list(providers)


@dataclass(frozen=True)
class Prediction:
    """One prediction made at a decision bar for the bar(s) ``horizon`` ahead.

    ``price`` is None when it cannot be known (class outputs, or ``runner.predict`` called
    without a ``PriceContext`` for a target that needs one); it is never a normalised value.
    ``predicted_return`` is None when unknown: class outputs, and price targets without a
    context. Return targets (``log_return``, ``simple_return``) know it, and so ``direction``
    and ``confidence``, from the raw output alone.

    ``no_prediction`` is None for a prediction. When the model's output is non-finite or
    implausible (``inference.decode``) it is the reason (``"non_finite_output"``,
    ``"implausible_output"``) and the result is no prediction: ``price`` and
    ``predicted_return`` None, ``confidence`` NaN, ``direction`` 0; ``raw`` keeps the output.
    """

    price: float | None
    confidence: float
    direction: int
    raw: float | tuple[float, ...]
    model_key: str
    inference_time: float
    predicted_return: float | None = None
    reference_close: float | None = None
    no_prediction: str | None = None

    @property
    def ok(self) -> bool:
        """True unless the model's output was rejected (``no_prediction``)."""
        return self.no_prediction is None

    @property
    def model_name(self) -> str:
        """Alias of ``model_key`` (the seed project's name)."""
        return self.model_key


@dataclass(frozen=True)
class PredictionBatch:
    """Predictions for ``n`` windows, as arrays (NaN where a price or return is unknown).

    ``no_prediction`` (object array) is None at a prediction, else why the window's output was
    rejected (see ``Prediction``); there price, return and confidence are NaN, direction 0.
    """

    price: np.ndarray
    confidence: np.ndarray
    direction: np.ndarray
    raw: np.ndarray
    predicted_return: np.ndarray
    model_key: str
    inference_time: float
    no_prediction: np.ndarray | None = None

    @property
    def rejected(self) -> np.ndarray:
        """Boolean mask of the windows whose output is no prediction."""
        if self.no_prediction is None:
            return np.zeros(len(self), dtype=bool)
        return np.not_equal(self.no_prediction, None)

    def __len__(self) -> int:
        return int(self.price.shape[0])


class OnnxRunner:
    """Runs one bundle's ONNX model on feature windows.

    Parameters
    ----------
    model_path : Path
        The bundle's ``model.onnx``.
    input_spec, output_spec : InputSpec, OutputSpec
        From the bundle's metadata; the session is checked against them when it opens.
    model_key : str
        ``SYMBOL/type@version``, carried by every prediction.
    intra_op_num_threads : int
        ONNX Runtime intra-op threads (default 1; see the module docstring).
    providers : str or list of str
        ``"cpu"`` (default), ``"auto"`` or explicit provider names.
    direction_threshold : float
        Predicted returns with ``|r| <= threshold`` give direction 0.
    batch_parity : bool
        Run single windows as a batch of two so they match batched results exactly (see the
        module docstring).
    """

    def __init__(
        self,
        model_path: Path | str,
        input_spec: InputSpec,
        output_spec: OutputSpec,
        model_key: str,
        *,
        intra_op_num_threads: int = 1,
        providers: str | Sequence[str] | None = "cpu",
        direction_threshold: float = 0.0,
        batch_parity: bool = True,
    ) -> None:
        self.model_path = Path(model_path)
        self.input_spec = input_spec
        self.output_spec = output_spec
        self.model_key = model_key
        self.intra_op_num_threads = intra_op_num_threads
        self.providers = providers
        self.direction_threshold = direction_threshold
        self.batch_parity = batch_parity
        self._session: Any = None
        self._input_name: str | None = None
        self._output_name: str | None = None
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- session

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_session"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __copy__(self) -> OnnxRunner:
        new = OnnxRunner.__new__(OnnxRunner)
        new.__setstate__(self.__getstate__())
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> OnnxRunner:
        return self.__copy__()

    @property
    def session(self) -> Any:
        """The ``InferenceSession``, opened (and checked) on first use."""
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._open()
        return self._session

    def check(self) -> None:
        """Open the model (once) and check its tensors against the bundle's input spec.

        Raises
        ------
        BundleError
            The file is not a loadable ONNX model, or its input/output tensors do not match.
        """
        _ = self.session

    def _open(self) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_num_threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            session = ort.InferenceSession(
                str(self.model_path), sess_options=opts, providers=resolve_providers(self.providers)
            )
        except ConfigurationError:
            raise
        except Exception as e:
            raise BundleError(
                f"{self.model_path} could not be loaded by ONNX Runtime: {e}. "
                "The file is corrupt or not an ONNX model; retrain or restore the bundle.",
                path=self.model_path,
            ) from e
        self._check_session(session)
        return session

    def _check_session(self, session: Any) -> None:
        spec = self.input_spec
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise BundleError(
                f"{self.model_path} has {len(inputs)} inputs {[i.name for i in inputs]}; "
                "a bundle model must take exactly one [batch, sequence, features] tensor.",
                path=self.model_path,
            )
        inp = inputs[0]
        if spec.name is not None and inp.name != spec.name:
            raise BundleError(
                f"{self.model_path} input is named {inp.name!r}, but metadata.json input.name "
                f"says {spec.name!r}.",
                path=self.model_path,
                field="input.name",
            )
        if inp.type != "tensor(float)":
            raise BundleError(
                f"{self.model_path} input {inp.name!r} has type {inp.type}; expected "
                f"tensor(float) (float32) as metadata.json input.dtype says.",
                path=self.model_path,
                field="input.dtype",
            )
        shape = list(inp.shape)
        expected = [spec.sequence_length, spec.n_features]
        if len(shape) != 3 or [s if isinstance(s, int) else None for s in shape[1:]] != expected:
            raise BundleError(
                f"{self.model_path} input {inp.name!r} has shape {shape}; the bundle's schema "
                f"declares [batch, {spec.sequence_length}, {spec.n_features}] "
                f"(sequence_length x features).",
                path=self.model_path,
                field="input.shape",
            )
        outputs = session.get_outputs()
        names = [o.name for o in outputs]
        out_name = self.output_spec.name or names[0]
        if out_name not in names:
            raise BundleError(
                f"{self.model_path} has no output {out_name!r} (metadata.json output.name); "
                f"its outputs are {names}.",
                path=self.model_path,
                field="output.name",
            )
        out = outputs[names.index(out_name)]
        width = len(self.output_spec.classes) if self.output_spec.classes else 1
        last = out.shape[-1] if len(out.shape) >= 2 else 1
        if isinstance(last, int) and last != width:
            raise BundleError(
                f"{self.model_path} output {out_name!r} has shape {list(out.shape)}; target "
                f"{self.output_spec.target!r} needs {width} value(s) per window.",
                path=self.model_path,
                field="output",
            )
        self._input_name = inp.name
        self._output_name = out_name

    # ---------------------------------------------------------------- inference

    def _check(self, x: np.ndarray, batched: bool) -> None:
        spec = self.input_spec
        want = (spec.sequence_length, spec.n_features)
        if not isinstance(x, np.ndarray):
            raise InferenceError(
                f"{self.model_key}: features must be a numpy array of shape "
                f"{_shape_text(want, batched)}; got {type(x).__name__}."
            )
        if x.ndim != (3 if batched else 2) or x.shape[-2:] != want:
            raise InferenceError(
                f"{self.model_key}: features have shape {x.shape}; expected "
                f"{_shape_text(want, batched)} (sequence_length x features)."
            )
        if x.dtype != _FLOAT32:
            raise InferenceError(
                f"{self.model_key}: features have dtype {x.dtype}; the model takes float32. "
                "Convert with features.astype(np.float32)."
            )
        # a finite sum means every value is finite (one reduction, no temporary array); an
        # infinite one may be an overflow of finite values, so look element by element then
        if not math.isfinite(np.add.reduce(x, axis=None)):
            finite = np.isfinite(x)
            if not finite.all():
                idx = tuple(int(i) for i in np.argwhere(~finite)[0])
                raise InferenceError(
                    f"{self.model_key}: features hold {float(x[idx])!r} at index {idx}; NaN "
                    "and inf cannot be fed to the model. Check the candles behind that window."
                )

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        """``session.run`` on a checked ``(n, seq, features)`` float32 array; raw outputs."""
        session = self.session
        out = session.run([self._output_name], {self._input_name: x})[0]
        width = len(self.output_spec.classes) if self.output_spec.classes else 1
        return (
            np.asarray(out).reshape(x.shape[0], width)
            if width > 1
            else np.asarray(out).reshape(x.shape[0])
        )

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        """``run_raw`` on ``(n, seq, features)``; with ``batch_parity`` a single window (a batch,
        or the last chunk, of one) runs as a batch of two, exactly like ``predict``, so that
        every window of every batch takes the batched kernels."""
        if self.batch_parity and x.shape[0] == 1:
            return self.run_raw(np.concatenate((x, x)))[:1]
        return self.run_raw(x)

    def predict(self, features: np.ndarray, context: PriceContext | None = None) -> Prediction:
        """Predict from one window ``(sequence_length, n_features)`` of float32 features.

        ``context`` (from ``FeatureStream.context()``) is needed to express the output as a
        price for targets relative to the window or the current close; without it ``price`` is
        None for those targets. Return targets (``log_return``, ``simple_return``) still give
        ``predicted_return``, ``direction`` and ``confidence`` from the raw output; a target
        relative to the window (``close_window_minmax``) gives only ``raw`` (predicted return
        None, direction 0, confidence 0).
        """
        self._check(features, batched=False)
        t0 = time.perf_counter()
        raw = self._run_chunk(features[None])
        dt = time.perf_counter() - t0
        d = decode(self.output_spec, raw, context, self.direction_threshold)
        price = float(d.price[0])
        ret = float(d.predicted_return[0])
        raw_value: float | tuple[float, ...] = (
            tuple(float(v) for v in raw[0]) if raw.ndim == 2 else float(raw[0])
        )
        return Prediction(
            price=price if math.isfinite(price) else None,
            confidence=float(d.confidence[0]),
            direction=int(d.direction[0]),
            raw=raw_value,
            model_key=self.model_key,
            inference_time=dt,
            predicted_return=ret if math.isfinite(ret) else None,
            reference_close=(float(context.reference_close) if context is not None else None),
            no_prediction=d.reason[0],
        )

    def predict_batch(
        self,
        windows: np.ndarray,
        context: PriceContext | None = None,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> PredictionBatch:
        """Predict for ``(n, sequence_length, n_features)`` float32 windows, in chunks."""
        self._check(windows, batched=True)
        t0 = time.perf_counter()
        parts = [
            self._run_chunk(np.ascontiguousarray(windows[i : i + chunk_size]))
            for i in range(0, windows.shape[0], chunk_size)
        ]
        dt = time.perf_counter() - t0
        width = len(self.output_spec.classes) if self.output_spec.classes else 1
        empty = np.empty((0, width)) if width > 1 else np.empty(0)
        raw = np.concatenate(parts) if parts else empty
        d = decode(self.output_spec, raw, context, self.direction_threshold)
        return PredictionBatch(
            price=d.price,
            confidence=d.confidence,
            direction=d.direction,
            raw=raw,
            predicted_return=d.predicted_return,
            model_key=self.model_key,
            inference_time=dt,
            no_prediction=d.reason,
        )
