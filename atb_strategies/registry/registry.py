"""``ModelRegistry``: discover bundles, select one by symbol/type/timeframe/version, cache it.

Discovery reads directory names and ``metadata.json`` only; ONNX sessions open when a bundle is
selected and stay cached per version, so memory grows with what is used, not what is on disk.
``reload()`` rescans the disk and drops cached bundles; it is safe to call from any thread while
others select (selection and reload share one lock; bundles already handed out keep working).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atb_strategies.bundle.format import METADATA_FILE, is_timeframe
from atb_strategies.bundle.jsonio import read_json
from atb_strategies.bundle.legacy import summary_fields
from atb_strategies.bundle.loader import BundleSpec, load_bundle_spec, model_key
from atb_strategies.bundle.safeio import shown
from atb_strategies.config import PredictionConfig
from atb_strategies.exceptions import (
    AtbError,
    BundleError,
    ModelNotFoundError,
    RegistryError,
)
from atb_strategies.inference.bundle import ModelBundle
from atb_strategies.inference.certificate import verify_certificate
from atb_strategies.inference.smoke import smoke_run
from atb_strategies.registry.layout import RegistryLayout, VersionDir

log = logging.getLogger(__name__)
#: What a ``created_at`` shown in listings may contain (anything else shows as unknown).
_STAMP = re.compile(r"[0-9A-Za-z:+. _-]{1,40}")


@dataclass(frozen=True)
class BundleInfo:
    """What discovery knows about one version without loading it.

    ``timeframe``, ``created_at`` and ``input_shape`` come from ``metadata.json`` when readable;
    ``error`` holds why it could not be read (validation happens on selection).
    """

    symbol: str
    model_type: str
    version: str
    path: Path
    is_latest: bool
    timeframe: str | None
    created_at: str | None
    input_shape: tuple[int | None, ...] | None
    error: str | None = None

    @property
    def key(self) -> str:
        return model_key(self.symbol, self.model_type, self.version)


def _info(vd: VersionDir, latest: str | None, layout: RegistryLayout) -> BundleInfo:
    try:
        if vd.error is not None:
            raise RegistryError(vd.error)
        # refuses paths outside the root
        path = layout.version_dir(vd.symbol, vd.model_type, vd.version)
        meta = read_json(path / METADATA_FILE, path)
    except RegistryError as e:
        return BundleInfo(
            vd.symbol,
            vd.model_type,
            vd.version,
            vd.path,
            vd.version == latest,
            None,
            None,
            None,
            str(e),
        )
    shape, created = summary_fields(meta)
    timeframe = meta.get("timeframe")
    return BundleInfo(
        vd.symbol,
        vd.model_type,
        vd.version,
        vd.path,
        vd.version == latest,
        timeframe if is_timeframe(timeframe) else None,
        created if isinstance(created, str) and _STAMP.fullmatch(created) else None,
        shape
        if shape is not None and all(s is None or isinstance(s, int) for s in shape)
        else None,
    )


class ModelRegistry:
    """A model registry rooted at a directory.

    Parameters
    ----------
    root : Path or str
        Registry root holding ``<SYMBOL>/<TYPE>/<VERSION>/``.
    runner_options : mapping, optional
        Passed to every ``OnnxRunner`` (``intra_op_num_threads``, ``providers``,
        ``direction_threshold``).
    verify_checksum : bool
        Check ``model.onnx`` against ``metadata.json``'s sha256 when a bundle is selected.
    """

    def __init__(
        self,
        root: Path | str,
        runner_options: Mapping[str, Any] | None = None,
        *,
        verify_checksum: bool = True,
    ) -> None:
        self.layout = RegistryLayout(root)
        self.config: PredictionConfig | None = None
        self.runner_options = dict(runner_options or {})
        self.verify_checksum = verify_checksum
        self._lock = threading.RLock()
        self._cache: dict[str, ModelBundle] = {}

    @classmethod
    def from_config(
        cls, config: PredictionConfig | None = None, *, root: Path | str | None = None
    ) -> ModelRegistry:
        """The registry ``config`` describes (default: ``PredictionConfig.from_config_manager()``);
        ``root`` overrides its path. The config stays available as ``.config``."""
        config = config if config is not None else PredictionConfig.from_config_manager()
        registry = ModelRegistry(
            root if root is not None else config.model_registry_path,
            config.runner_options,
            verify_checksum=config.verify_checksum,
        )
        registry.config = config
        return registry

    @property
    def root(self) -> Path:
        return self.layout.root

    def reload(self) -> None:
        """Forget cached bundles so the next selection re-reads the disk."""
        with self._lock:
            self._cache = {}

    # compatibility with the reference project's name
    reload_models = reload

    def list_bundles(self) -> list[BundleInfo]:
        """Every version on disk (servable or not), sorted by symbol, type, version."""
        out = []
        latest_cache: dict[tuple[str, str], str | None] = {}
        for vd in self.layout.walk():
            k = (vd.symbol, vd.model_type)
            if k not in latest_cache:
                try:
                    latest_cache[k] = self.layout.read_latest(*k)
                except RegistryError:
                    latest_cache[k] = None
            out.append(_info(vd, latest_cache[k], self.layout))
        return out

    def resolve_version(self, symbol: str, model_type: str, version: str | None = None) -> str:
        """The concrete version name for ``version`` (None or ``"latest"`` = the pointer)."""
        if version in (None, "latest"):
            # Fast path: a pointer naming an existing version directory (re-read only when it
            # changes on disk, see ``RegistryLayout.read_latest``) implies there are versions.
            # Anything else takes the full path below, with its messages.
            try:
                latest = self.layout.read_latest(symbol, model_type)
            except RegistryError:
                latest = None
            if latest is not None:
                return latest
        versions = self.layout.versions(symbol, model_type)
        if not versions:
            raise ModelNotFoundError(self._not_found_message(symbol, model_type, None))
        if version in (None, "latest"):
            latest = self.layout.read_latest(symbol, model_type)
            if latest is None:
                raise ModelNotFoundError(
                    f"{symbol}/{model_type} has no 'latest' pointer; versions: "
                    f"{', '.join(versions)}. Pass version=... or run "
                    f"`atb models promote {symbol} {model_type} VERSION`."
                )
            return latest
        if version not in versions:
            raise ModelNotFoundError(self._not_found_message(symbol, model_type, version))
        return version

    def _not_found_message(self, symbol: str, model_type: str, version: str | None) -> str:
        if not self.root.is_dir():
            return (
                f"The registry folder {self.root} does not exist (or is not a folder), so it has "
                f"no {symbol}/{model_type} models. Check the registry path (--registry on the "
                "command line, model_registry_path or ATB_MODEL_REGISTRY_PATH) or train a model "
                "into it."
            )
        symbols = self.layout.symbols()
        if symbol not in symbols:
            return (
                f"No models for symbol {symbol!r} in registry {self.root}. "
                f"Symbols present: {', '.join(symbols) or 'none'}."
            )
        types = self.layout.model_types(symbol)
        if model_type not in types:
            return (
                f"No {model_type!r} models for {symbol} in registry {self.root}. "
                f"Types present for {symbol}: {', '.join(types) or 'none'}."
            )
        versions = self.layout.versions(symbol, model_type)
        return (
            f"{symbol}/{model_type} has no version {shown(version)} in registry {self.root}. "
            f"Versions present: {', '.join(versions) or 'none'}."
        )

    def load_spec(self, symbol: str, model_type: str, version: str | None = None) -> BundleSpec:
        """Read and validate a bundle's files without opening its model."""
        name = self.resolve_version(symbol, model_type, version)
        return load_bundle_spec(
            self.layout.version_dir(symbol, model_type, name),
            verify_checksum=self.verify_checksum,
        )

    def select_bundle(
        self,
        symbol: str,
        model_type: str,
        timeframe: str | None = None,
        version: str | None = None,
    ) -> ModelBundle:
        """Select a servable bundle; ``version=None`` follows ``latest``.

        The bundle is validated (files, schema, checksum, ONNX input/output against the schema)
        and its session opened, once per version; later calls return the cached bundle.

        Raises
        ------
        ModelNotFoundError
            Nothing matches; the message lists what exists.
        BundleError
            The bundle is corrupt or cannot be served faithfully; the message names the file
            and field.
        """
        follow_latest = version in (None, "latest")
        attempts = 10 if follow_latest else 1
        with self._lock:
            for attempt in range(attempts):
                name: str | None = None
                try:
                    name = self.resolve_version(symbol, model_type, version)
                    key = model_key(symbol, model_type, name)
                    bundle = self._cache.get(key)
                    if bundle is None:
                        spec = self.load_spec(symbol, model_type, name)
                        bundle = ModelBundle(spec, self.runner_options)
                        _ = bundle.runner.session  # open and check against the schema now
                        smoke_run(bundle.runner)  # and run it once, as use will
                        self._cache[key] = bundle
                    break
                except (BundleError, RegistryError, FileNotFoundError):
                    # ``latest`` may have moved and the old version been pruned between
                    # resolving and reading it: follow the pointer again before failing.
                    gone = (
                        name is None
                        or not self.layout.version_dir(symbol, model_type, name).exists()
                    )
                    if gone and attempt < attempts - 1:
                        continue
                    raise
        if timeframe is not None and bundle.timeframe != timeframe:
            same_tf = [
                i.version
                for i in self.list_bundles()
                if (i.symbol, i.model_type, i.timeframe) == (symbol, model_type, timeframe)
            ]
            which = "latest" if version in (None, "latest") else "version"
            raise ModelNotFoundError(
                f"{key} ({which}) is a {bundle.timeframe} model, but timeframe {timeframe!r} was "
                f"requested. {symbol}/{model_type} versions for {timeframe}: "
                f"{', '.join(same_tf) or 'none'}. Resample the data, pick one of those "
                "versions, or train one for this timeframe."
            )
        return bundle

    def validate_all(self) -> list[tuple[BundleInfo, str | None]]:
        """Fully validate every version (opening and closing its session, re-running its parity
        certificate on this machine); ``(info, error)``."""
        results = []
        for info in self.list_bundles():
            error = info.error
            if error is None:
                error = self._validate_one(info)
            results.append((info, error))
        return results

    def _validate_one(self, info: BundleInfo) -> str | None:
        """Why one version is invalid (None: valid); never raises for one bad version."""
        try:
            path = self.layout.version_dir(info.symbol, info.model_type, info.version)
            spec = load_bundle_spec(path, verify_checksum=self.verify_checksum)
            bundle = ModelBundle(spec, self.runner_options)
            bundle.runner.check()
            smoke_run(bundle.runner)
            verify_certificate(bundle)
        except AtbError as e:
            return str(e)
        except Exception as e:  # one version must never stop the others being checked
            log.debug("validating %s failed", info.key, exc_info=True)
            return (
                f"{info.key} could not be validated: unexpected {type(e).__name__}: "
                f"{shown(str(e), 300)}. This is a bug in atb_strategies or a case it does not "
                "handle yet; please report it."
            )
        return None
