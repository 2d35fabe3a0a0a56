"""Video plugin tests: ``plugins/video`` on ``sys.path`` and, where a test asks for it, the plugin added to
the registry (it is not an installed entry point yet)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PLUGIN_ROOT = Path(__file__).resolve().parents[3] / "plugins" / "video"
if importlib.util.find_spec("mmim_video") is None:
    sys.path.insert(0, str(PLUGIN_ROOT))

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture
def video_registry(monkeypatch):
    """The registry with the ``video`` plugin discovered (skips adding it when it is already installed)."""
    from mmim import registry
    from mmim_video import plugin

    infos = registry.discover()
    if not any(i.plugin is not None and i.plugin.name == "video" for i in infos):
        extra = registry.PluginInfo("video", "mmim", "dev", plugin=plugin)
        monkeypatch.setattr(registry, "_cache", [*infos, extra])
    return registry
