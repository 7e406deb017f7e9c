"""Data: the BraTS-layout phantom, dataset readers, the memory-mapped slice store, splits and
the PyTorch dataset over the store.

>>> from gpcore.data import SliceStore, SliceDataset, load_split, split_rows
>>> store = SliceStore("data/phantom/quick/store")
>>> split = load_split("data/phantom/quick/split.csv")
>>> train = SliceDataset(store, split_rows(split, store.index, fold=0, part="train"))
"""
from .errors import DataError
from .records import (BRATS_CLASSES, BRATS_CONTRASTS, BRATS_LABELS, SliceSample, Volume,
                      VolumeSubject)
from .splits import load_split, patient_split, published_split, split_rows
from .store import SliceStore, build_store


def __getattr__(name):  # torch-dependent pieces load on first use
    if name in ("SliceDataset", "Augmentation"):
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(name)


__all__ = ["Augmentation", "BRATS_CLASSES", "BRATS_CONTRASTS", "BRATS_LABELS", "DataError",
           "SliceDataset", "SliceSample", "SliceStore", "Volume", "VolumeSubject", "build_store",
           "load_split", "patient_split", "published_split", "split_rows"]
