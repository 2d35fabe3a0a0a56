"""The shared transformer trunk: ViT encoder, position tables."""
