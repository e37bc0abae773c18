"""Datasets: Fashion-MNIST IDX files, image folders and zips, .npz arrays."""
