"""Converters between official checkpoints and mmim state dicts (Point-MAE)."""
