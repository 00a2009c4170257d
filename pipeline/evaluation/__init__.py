"""Segmentation metrics (MONAI) and the figures people look at."""
