"""unet-pipeline: from a folder of scans with masks to a validated, exported U-Net."""

__version__ = "0.1.0"
