"""``PredictionConfig``: where the registry is and how predictions are made.

Sources, later ones winning: defaults, a TOML config file, ``ATB_*`` environment variables.

The config file is ``$ATB_CONFIG_FILE`` if set, else ``./atb.toml`` if it exists; its
``[prediction]`` table takes the field names below. Environment variables:

=============================  ===========================  ==============================
variable                       field                        default
=============================  ===========================  ==============================
``ATB_MODEL_REGISTRY_PATH``    ``model_registry_path``      ``./models`` if it exists, else
                                                            the models shipped beside the
                                                            package (source checkout)
``ATB_DEFAULT_SYMBOL``         ``default_symbol``           ``BTCUSDT``
``ATB_DEFAULT_MODEL_TYPE``     ``default_model_type``       ``basic``
``ATB_DEFAULT_TIMEFRAME``      ``default_timeframe``        ``1h``
``ATB_MODEL_VERSION``          ``default_version``          ``None`` (follow ``latest``)
``ATB_ONNX_THREADS``           ``intra_op_num_threads``     ``1``
``ATB_ONNX_PROVIDERS``         ``providers``                ``cpu`` (or ``auto``, or names)
``ATB_DIRECTION_THRESHOLD``    ``direction_threshold``      ``0.0``
``ATB_VERIFY_CHECKSUM``        ``verify_checksum``          ``true``
``ATB_BATCH_PARITY``           ``batch_parity``             ``true`` (see ``OnnxRunner``)
=============================  ===========================  ==============================
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from atb_strategies.exceptions import ConfigurationError

#: What missing candles do, everywhere (see ``atb_strategies.features.candles``).
GAP_POLICIES = ("skip", "raise", "warn", "allow")

#: Models shipped in the source tree beside the package (``<checkout>/models``).
SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "models"

_ENV = {
    "ATB_MODEL_REGISTRY_PATH": "model_registry_path",
    "ATB_DEFAULT_SYMBOL": "default_symbol",
    "ATB_DEFAULT_MODEL_TYPE": "default_model_type",
    "ATB_DEFAULT_TIMEFRAME": "default_timeframe",
    "ATB_MODEL_VERSION": "default_version",
    "ATB_ONNX_THREADS": "intra_op_num_threads",
    "ATB_ONNX_PROVIDERS": "providers",
    "ATB_DIRECTION_THRESHOLD": "direction_threshold",
    "ATB_VERIFY_CHECKSUM": "verify_checksum",
    "ATB_BATCH_PARITY": "batch_parity",
}


def default_registry_path() -> Path:
    """``./models`` when it exists, else the models shipped beside the package."""
    local = Path("models")
    return local.resolve() if local.is_dir() else SHIPPED_MODELS


@dataclass(frozen=True)
class PredictionConfig:
    """Settings of the prediction engine and registry (see the module docstring)."""

    model_registry_path: Path = Path("models")
    default_symbol: str = "BTCUSDT"
    default_model_type: str = "basic"
    default_timeframe: str = "1h"
    default_version: str | None = None
    intra_op_num_threads: int = 1
    providers: str = "cpu"
    direction_threshold: float = 0.0
    verify_checksum: bool = True
    batch_parity: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_registry_path", Path(self.model_registry_path))
        if self.intra_op_num_threads < 1:
            raise ConfigurationError(
                "The 'intra_op_num_threads' parameter of PredictionConfig must be >= 1. "
                f"Got {self.intra_op_num_threads!r} instead."
            )
        if not math.isfinite(self.direction_threshold) or self.direction_threshold < 0:
            raise ConfigurationError(
                "The 'direction_threshold' parameter of PredictionConfig must be a finite "
                "number >= 0. "
                f"Got {self.direction_threshold!r} instead."
            )

    @property
    def runner_options(self) -> dict[str, Any]:
        return {
            "intra_op_num_threads": self.intra_op_num_threads,
            "providers": self.providers,
            "direction_threshold": self.direction_threshold,
            "batch_parity": self.batch_parity,
        }

    def with_overrides(self, **changes: Any) -> PredictionConfig:
        return replace(self, **changes)

    @classmethod
    def from_config_manager(
        cls,
        config_file: Path | str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> PredictionConfig:
        """Build the config from defaults, the config file and ``ATB_*`` variables."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {"model_registry_path": default_registry_path()}
        path = Path(config_file) if config_file else None
        if path is None and env.get("ATB_CONFIG_FILE"):
            path = Path(env["ATB_CONFIG_FILE"])
        if path is None and Path("atb.toml").is_file():
            path = Path("atb.toml")
        if path is not None:
            values.update(_read_file(path))
        for var, name in _ENV.items():
            if env.get(var, "") != "":
                values[name] = _coerce(name, env[var], var)
        return cls(**values)


_TYPES = {f.name: f.type for f in fields(PredictionConfig)}


def _coerce(name: str, raw: Any, where: str) -> Any:
    kind = _TYPES[name]
    try:
        if isinstance(raw, bool) and kind in ("int", "float"):
            raise ValueError(raw)
        if kind == "int" and isinstance(raw, float):
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind == "Path":
            return Path(raw).expanduser()
        return str(raw)
    except (TypeError, ValueError) as e:
        raise ConfigurationError(
            f"{where} must be a valid {kind} for {name!r}. Got {raw!r} instead."
        ) from e


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigurationError(f"Config file {path} does not exist.") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigurationError(f"Config file {path} is not valid TOML: {e}.") from e
    table = data.get("prediction", {})
    if not isinstance(table, dict):
        raise ConfigurationError(f"{path}: [prediction] must be a table.")
    unknown = sorted(set(table) - set(_TYPES))
    if unknown:
        raise ConfigurationError(
            f"{path}: unknown [prediction] key(s) {unknown}; known keys: {sorted(_TYPES)}."
        )
    out = {k: _coerce(k, v, f"{path} [prediction].{k}") for k, v in table.items()}
    if "model_registry_path" in out and not out["model_registry_path"].is_absolute():
        out["model_registry_path"] = path.parent / out["model_registry_path"]
    return out
