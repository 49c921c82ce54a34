"""Pydantic models of every message and row, topic names and JSON Schema export."""
