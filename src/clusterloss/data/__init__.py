"""Datasets in official formats, evaluation protocols, class-balanced batches, on-device augmentation."""

from clusterloss.data.augment import channel_stats, normalize, random_crop_flip
from clusterloss.data.dataset import ImageDataset
from clusterloss.data.loader import DeviceBatchLoader, iterate_in_order
from clusterloss.data.protocols import PROTOCOLS, Splits, build_splits, split_datasets
from clusterloss.data.registry import DATASETS, dataset_names, load_dataset
from clusterloss.data.sampler import ClassBalancedBatchSampler

__all__ = [
    "DATASETS",
    "PROTOCOLS",
    "ClassBalancedBatchSampler",
    "DeviceBatchLoader",
    "ImageDataset",
    "Splits",
    "build_splits",
    "channel_stats",
    "dataset_names",
    "iterate_in_order",
    "load_dataset",
    "normalize",
    "random_crop_flip",
    "split_datasets",
]
