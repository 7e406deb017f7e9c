"""Data: the BraTS-layout phantom, dataset readers, the memory-mapped slice store, splits and
the PyTorch dataset over the store."""
from .errors import DataError
from .records import (BRATS_CLASSES, BRATS_CONTRASTS, BRATS_LABELS, SliceSample, Volume,
                      VolumeSubject)

__all__ = ["BRATS_CLASSES", "BRATS_CONTRASTS", "BRATS_LABELS", "DataError", "SliceSample",
           "Volume", "VolumeSubject"]
