"""``ModelBundle``: a selected, validated bundle with its feature pipeline and ONNX runner."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from atb_strategies.bundle.format import BundleMetadata, FeatureSchema
from atb_strategies.bundle.loader import BundleSpec
from atb_strategies.features.pipeline import FeaturePipeline
from atb_strategies.inference.runner import OnnxRunner


class ModelBundle:
    """A servable bundle: ``.key``, ``.metadata``, ``.feature_schema``, ``.pipeline``, ``.runner``.

    Obtained from ``PredictionModelRegistry.select_bundle``; its ONNX session is already open
    and checked against the schema. Pickling keeps everything but the session, which is
    re-created on first use in the new process.
    """

    def __init__(self, spec: BundleSpec, runner_options: Mapping[str, Any]) -> None:
        self.spec = spec
        self.pipeline = FeaturePipeline(spec.schema)
        m = spec.metadata
        self.runner = OnnxRunner(
            spec.model_path, m.input, m.output, spec.key, **dict(runner_options)
        )

    @property
    def key(self) -> str:
        """``SYMBOL/type@version``."""
        return self.spec.key

    @property
    def metadata(self) -> BundleMetadata:
        return self.spec.metadata

    @property
    def feature_schema(self) -> FeatureSchema:
        return self.spec.schema

    @property
    def directory(self) -> Path:
        return self.spec.directory

    @property
    def symbol(self) -> str:
        return self.metadata.symbol

    @property
    def model_type(self) -> str:
        return self.metadata.model_type

    @property
    def timeframe(self) -> str:
        return self.metadata.timeframe

    @property
    def version(self) -> str:
        return self.metadata.version

    @property
    def version_id(self) -> str:
        """Alias of ``version`` (the reference project's name)."""
        return self.metadata.version

    @property
    def sequence_length(self) -> int:
        return self.feature_schema.sequence_length

    def __repr__(self) -> str:
        return f"ModelBundle({self.key}, timeframe={self.timeframe}, dir={self.directory})"
