"""Compute configs, images, clusters and nodes (see issue 4)."""
