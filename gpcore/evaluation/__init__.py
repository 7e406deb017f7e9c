"""Evaluation of the GP classifiers (spec ``evaluation.md``): segmentation scores from heatmaps."""
