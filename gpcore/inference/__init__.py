"""Weakly-supervised segmentation: heatmaps of the GP classifiers thresholded into masks."""
from .maps import MAP_RULES, MaskRule, brain_mask, tumour_map
from .threshold import (PUBLISHED_OFFSETS, clean_mask, heatmap_channel, heatmap_to_mask,
                        threshold_value)

__all__ = ["MAP_RULES", "MaskRule", "PUBLISHED_OFFSETS", "brain_mask", "clean_mask", "heatmap_channel",
           "heatmap_to_mask", "threshold_value", "tumour_map"]
