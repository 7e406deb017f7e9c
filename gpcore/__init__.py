"""gpcore: inherently-explainable global-pooling classifiers for brain-tumour MRI and their
weakly-supervised segmentation (Chatterjee et al., Neurocomputing 2026, arXiv 2206.05148)."""
__version__ = "0.1.0"
