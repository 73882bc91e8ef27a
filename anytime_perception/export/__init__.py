"""Export trained models to per-stage ONNX graphs and a manifest (the runtime's contract)."""
