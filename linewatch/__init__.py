"""linewatch: streaming multimodal process monitoring for manufacturing lines."""

__version__ = "0.1.0"
