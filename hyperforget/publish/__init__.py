"""Getting a model out: MLflow tracking and registry, ONNX export, S3 storage, and the release step that
gates, registers, exports and uploads (an alias moves only after the gates pass)."""
