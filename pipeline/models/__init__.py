"""CNN models (docs/method.md section 5) and the registry of named variants (section 9)."""

from pipeline.models.cnn import (ChartCNN, ConvBlock, ModelSpec, count_parameters, fuse_for_inference,
                                 macs_per_image)
from pipeline.models.registry import TABLE18, Table18Row, create_model, list_models, model_spec

__all__ = ["ChartCNN", "ConvBlock", "ModelSpec", "count_parameters", "fuse_for_inference", "macs_per_image", "TABLE18",
           "Table18Row", "create_model", "list_models", "model_spec"]
