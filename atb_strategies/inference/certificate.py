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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atb_strategies.exceptions import BundleError
from atb_strategies.inference.bundle import ModelBundle

CERTIFICATE_FILE = "parity_certificate.npz"
#: Windows a certificate holds.
CERTIFICATE_SIZE = 16
#: Absolute (and relative) tolerance: float32 outputs of the same graph on another build of
#: ONNX Runtime or another CPU differ by about 1e-7; a real mismatch is orders larger.
TOLERANCE = 1e-5


@dataclass(frozen=True)
class CertificateCheck:
    """What ``verify_certificate`` found: windows checked and the largest difference."""

    path: Path | None
    windows: int
    max_abs_diff: float

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
        When an output differs beyond the tolerance (naming the window and the difference) or
        the certificate is unreadable.
    """
    path = bundle.directory / CERTIFICATE_FILE
    if not path.is_file():
        return CertificateCheck(None, 0, float("nan"))
    try:
        with np.load(path) as data:
            inputs, expected = data["inputs"], data["outputs"]
            tolerance = float(data["tolerance"]) if "tolerance" in data else TOLERANCE
    except (OSError, ValueError, KeyError) as e:
        raise BundleError(f"{path}: unreadable parity certificate ({e}).", path=path) from e
    raw = bundle.runner.run_raw(inputs)
    got = np.asarray(raw, dtype=np.float64).reshape(expected.shape)
    diff = np.abs(got - expected.astype(np.float64))
    limit = tolerance + tolerance * np.abs(expected.astype(np.float64))
    worst = int(np.argmax(diff - limit)) if diff.size else 0
    if diff.size and (diff > limit).any():
        index = np.unravel_index(worst, diff.shape)
        raise BundleError(
            f"{bundle.key}: this machine's ONNX Runtime does not reproduce the bundle's parity "
            f"certificate: window {index[0]} gives {got[index]!r} instead of "
            f"{float(expected[index])!r} (difference {diff[index]:.3g}, tolerance "
            f"{tolerance:g}). Its predictions here would not be the ones it was validated "
            f"with; check the onnxruntime version or retrain. Certificate: {path}",
            path=path,
        )
    return CertificateCheck(path, len(inputs), float(diff.max()) if diff.size else 0.0)
