"""Converters between official checkpoint formats and mmim's :class:`~mmim.model.MaskedModel` state dicts."""
