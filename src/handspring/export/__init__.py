"""`handspring export`: a model as standalone ONNX files plus its preprocessing as data,
for ONNX Runtime in any language (docs/export.md)."""

from handspring.export.errors import ExportError
from handspring.export.exporter import export_model

__all__ = ["ExportError", "export_model"]
