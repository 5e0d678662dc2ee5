"""UDS: Utility-Diversity Sampling for LoRA fine-tuning.

This package imports no heavy dependency at import time: `uds.config` and `uds.formats` are torch-free so
the API can validate jobs and datasets without loading PyTorch.
"""

__version__ = "0.1.0"
