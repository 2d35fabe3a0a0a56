"""Converters between official video checkpoint formats and mmim's :class:`~mmim.model.MaskedModel` state dicts."""
