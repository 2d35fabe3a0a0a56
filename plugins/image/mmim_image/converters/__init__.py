"""Converters between official checkpoint layouts and mmim modules."""
