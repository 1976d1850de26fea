"""The parity certificate: proof that this machine's ONNX Runtime computes what training did.

At registration, ``write_certificate`` stores ``CERTIFICATE_SIZE`` input windows taken evenly
from the test part, with the raw outputs ONNX Runtime gave for them (one batch, one thread), in
``parity_certificate.npz`` inside the bundle (``docs/bundle-format.md``). ``verify_certificate``
re-runs those windows as one batch through the bundle's own runner on this machine and refuses
the bundle when an output differs by more than the tolerance (``TOLERANCE`` absolute plus the
same relative), naming the largest difference. ``atb models validate`` and the start of every
live or paper session run it. A bundle without a certificate (reference-project bundles, older
versions) gets a one-line warning, not a refusal.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from atb_strategies.bundle.safeio import MAX_BYTES, read_bytes, shown
from atb_strategies.exceptions import BundleError
from atb_strategies.inference.bundle import ModelBundle

CERTIFICATE_FILE = "parity_certificate.npz"
#: Windows a certificate holds.
CERTIFICATE_SIZE = 16
#: Absolute (and relative) tolerance: float32 outputs of the same graph on another build of
#: ONNX Runtime or another CPU differ by about 1e-7; a real mismatch is orders larger.
TOLERANCE = 1e-5
#: Largest tolerance a certificate may declare: anything looser proves nothing.
MAX_TOLERANCE = 1e-3
#: Most windows a certificate may hold.
MAX_WINDOWS = 4096


@dataclass(frozen=True)
class CertificateCheck:
    """What ``verify_certificate`` found: windows checked and the largest difference."""

    path: Path | None
    windows: int
    max_abs_diff: float
    #: The raw outputs this machine gave for the certificate's windows (None without one), so
    #: a caller can judge them (hot reload decodes them) without running the model again.
    outputs: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def present(self) -> bool:
        return self.path is not None


def certificate_bytes(windows: np.ndarray, outputs: np.ndarray) -> bytes:
    """The ``parity_certificate.npz`` content for float32 ``windows`` and raw ``outputs``."""
    buffer = io.BytesIO()
    np.savez(
        buffer,
        inputs=np.ascontiguousarray(windows, dtype=np.float32),
        outputs=np.asarray(outputs, dtype=np.float32),
        tolerance=np.float64(TOLERANCE),
    )
    return buffer.getvalue()


def pick_windows(windows: np.ndarray, size: int = CERTIFICATE_SIZE) -> np.ndarray:
    """``size`` windows spread evenly over ``windows`` (all of them when fewer)."""
    if len(windows) <= size:
        return windows
    return windows[np.linspace(0, len(windows) - 1, size).round().astype(int)]


def verify_certificate(bundle: ModelBundle) -> CertificateCheck:
    """Re-run the bundle's certificate on this machine.

    Raises
    ------
    BundleError
        When an output differs beyond the tolerance (naming the window and the difference), or
        the certificate is unreadable or malformed: not a regular file inside the bundle, too
        large, inputs that are not float32 windows of the bundle's shape, outputs not one per
        window of the target's width, a non-finite value, a tolerance that is not one number
        in ``[0, MAX_TOLERANCE]``.
    """
    path = bundle.directory / CERTIFICATE_FILE
    if not os.path.lexists(path):
        return CertificateCheck(None, 0, float("nan"))
    inputs, expected, tolerance = _read(path, bundle)
    try:
        got = np.asarray(bundle.runner.run_raw(inputs), dtype=np.float64)
    except BundleError:
        raise
    except Exception as e:  # whatever ONNX Runtime raises for this graph and batch
        raise BundleError(
            f"{bundle.key}: the model fails on its own parity certificate ({len(inputs)} "
            f"windows): {type(e).__name__}: {shown(str(e), 300)}. Retrain the bundle. "
            f"Certificate: {path}",
            path=path,
        ) from e
    expected = expected.reshape(got.shape)
    diff = np.abs(got - expected)
    limit = tolerance + tolerance * np.abs(expected)
    # NaN compares False: a NaN output never passes for a finite expected one
    bad = ~(diff <= limit)
    if bad.any():
        excess = np.where(bad, np.nan_to_num(diff - limit, nan=np.inf), -np.inf)
        index = np.unravel_index(int(np.argmax(excess)), diff.shape)
        raise BundleError(
            f"{bundle.key}: this machine's ONNX Runtime does not reproduce the bundle's parity "
            f"certificate: window {index[0]} gives {got[index]!r} instead of "
            f"{float(expected[index])!r} (difference {diff[index]:.3g}, tolerance "
            f"{tolerance:g}). Its predictions here would not be the ones it was validated "
            f"with; check the onnxruntime version or retrain. Certificate: {path}",
            path=path,
        )
    return CertificateCheck(path, len(inputs), float(diff.max()), outputs=got)


def _read(path: Path, bundle: ModelBundle) -> tuple[np.ndarray, np.ndarray, float]:
    """``(inputs, expected outputs as float64, tolerance)`` of a checked certificate."""
    data = read_bytes(path, bundle.directory, "certificate")
    cap = MAX_BYTES["certificate"]
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            unpacked = sum(i.file_size for i in npz.zip.infolist())
            if unpacked > cap:
                raise ValueError(f"its arrays unpack to {unpacked:,} bytes, over {cap:,}")
            missing = [k for k in ("inputs", "outputs") if k not in npz.files]
            if missing:
                raise ValueError(f"no {' or '.join(missing)} array")
            inputs, outputs = npz["inputs"], npz["outputs"]
            tolerance = npz["tolerance"] if "tolerance" in npz.files else np.float64(TOLERANCE)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise BundleError(
            f"{path}: unreadable parity certificate ({shown(str(e), 200)}). Remove it (the "
            "bundle is then served without the check) or retrain the bundle.",
            path=path,
        ) from e
    spec, out = bundle.runner.input_spec, bundle.runner.output_spec
    width = len(out.classes) if out.classes else 1

    def malformed(problem: str) -> BundleError:
        return BundleError(
            f"{path}: malformed parity certificate: {problem}. Remove it (the bundle is then "
            "served without the check) or retrain the bundle.",
            path=path,
        )

    want = (spec.sequence_length, spec.n_features)
    if inputs.dtype != np.float32:
        raise malformed(f"'inputs' are {inputs.dtype}, the model takes float32")
    if inputs.ndim != 3 or inputs.shape[1:] != want or not 1 <= len(inputs) <= MAX_WINDOWS:
        raise malformed(
            f"'inputs' have shape {list(inputs.shape)}; expected [n, {want[0]}, {want[1]}] "
            f"with 1 <= n <= {MAX_WINDOWS}"
        )
    n = len(inputs)
    if outputs.dtype.kind != "f":
        raise malformed(f"'outputs' are {outputs.dtype}, not floats")
    if outputs.ndim == 0 or outputs.size != n * width or outputs.shape[0] != n:
        raise malformed(
            f"'outputs' have shape {list(outputs.shape)}; expected {n} window(s) x {width} "
            f"value(s) for target {out.target!r}"
        )
    if not (np.isfinite(inputs).all() and np.isfinite(outputs).all()):
        raise malformed("it holds NaN or infinite values")
    if tolerance.shape != () or tolerance.dtype.kind not in "fiu":
        raise malformed(f"'tolerance' must be one number; got shape {list(tolerance.shape)}")
    tol = float(tolerance)
    if not 0.0 <= tol <= MAX_TOLERANCE:
        raise malformed(f"'tolerance' is {tol!r}; it must be between 0 and {MAX_TOLERANCE:g}")
    return inputs, outputs.astype(np.float64), tol
