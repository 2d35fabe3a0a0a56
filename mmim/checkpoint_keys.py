"""Prefix-rename rules for mapping official checkpoint keys onto mmim modules (used by converters)."""

from __future__ import annotations

# (official prefix, mmim prefix); "{s}" in the mmim prefix is the stream's name
RenameRules = list[tuple[str, str]]


def rename_key(key: str, rules: RenameRules, stream: str) -> str | None:
    """``key`` with the first matching prefix of ``rules`` replaced, or None if no rule matches.

    Example: ``rename_key("blocks.0.attn.qkv.weight", [("blocks.", "encoder.blocks.")], "image")``
    gives ``"encoder.blocks.0.attn.qkv.weight"``.
    """
    for old, new in rules:
        if key.startswith(old):
            return new.format(s=stream) + key[len(old):]
    return None
