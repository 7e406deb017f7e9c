"""Weakly-supervised segmentation: heatmaps of the GP classifiers thresholded into masks."""
from .threshold import (PUBLISHED_OFFSETS, clean_mask, heatmap_channel, heatmap_to_mask,
                        threshold_value)

__all__ = ["PUBLISHED_OFFSETS", "clean_mask", "heatmap_channel", "heatmap_to_mask",
           "threshold_value"]
