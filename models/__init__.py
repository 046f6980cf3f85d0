"""Per-movie landmark tensors → factor models (TF, NLTF, FVAE), evaluation and reports.

models/ reads only the per-movie tensor file (pipeline/store.py holds its schema).
"""
