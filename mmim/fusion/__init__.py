"""Fusion of several token streams in one encoder: MultiMAE / 4M budgets and decoders.

Nothing here knows a modality: streams come from any installed plugin's tokenizers.
"""
