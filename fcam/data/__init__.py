"""Datasets: an embedded synthetic WSOL benchmark, loaders for the wsolevaluation layout and
folders of photographs with figure/ground masks (:class:`MaskFolder`)."""

from __future__ import annotations

from fcam.data.cub_raw import convert_cub_raw, read_cub_raw
from fcam.data.mask_folder import MaskFolder
from fcam.data.synthetic import CLASSES, SyntheticWSOL, generate_sample
from fcam.data.wsol_datasets import (
    CUBDataset,
    ILSVRCDataset,
    OpenImagesDataset,
    WSOLDataset,
    load_mask,
    wsol_collate,
)
from fcam.data.wsol_metadata import WSOLFormatError, WSOLMetadata, read_wsol_metadata
from fcam.data.wsol_writer import write_metadata, write_wsol_layout

__all__ = [
    "CLASSES",
    "CUBDataset",
    "ILSVRCDataset",
    "MaskFolder",
    "OpenImagesDataset",
    "SyntheticWSOL",
    "WSOLDataset",
    "WSOLFormatError",
    "WSOLMetadata",
    "convert_cub_raw",
    "generate_sample",
    "load_mask",
    "read_cub_raw",
    "read_wsol_metadata",
    "write_metadata",
    "write_wsol_layout",
    "wsol_collate",
]
