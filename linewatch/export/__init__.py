"""One-off model exports that need heavy training frameworks (torch); never imported at run time.

Everything here is run by a developer to regenerate a shipped artifact (for example
``python -m linewatch.export.efficientnet_backbone``); the run-time path only reads the
exported ONNX file and its JSON sidecar.
"""
