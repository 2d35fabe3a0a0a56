"""End-to-end fine-tuning of a pretrained encoder for classification."""
