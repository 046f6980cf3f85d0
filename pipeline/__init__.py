"""Video of a theatre audience → per-movie landmark tensors (N × T × 136).

pipeline/ never imports models/: the per-movie HDF5 tensor is the boundary.
"""
__version__ = "0.1.0"
