"""Evaluation of the GP classifiers (``docs/spec/evaluation.md``): segmentation scores from heatmaps."""
