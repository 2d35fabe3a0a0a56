"""Evaluation of frozen encoders: linear probe and k-NN on pooled features, any modality."""
