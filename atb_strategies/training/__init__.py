"""Training: datasets from candles, model families, ONNX export with a parity gate, honest
evaluation and atomic registration (``atb train model``)."""
