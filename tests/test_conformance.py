"""Every registered component of every installed plugin passes the conformance kit: tokenizers,
maskers, targets, losses and decoders (``mmim.testing.conformance``), and datasets, converters
and visualizers (``mmim.testing.plugin_checks``)."""

from __future__ import annotations

import pytest

from mmim import registry
from mmim.testing.plugin_checks import CHECKS, CheckSkipped

CASES = [(kind, name) for kind in CHECKS for name in registry.available(kind)]


def test_every_kind_has_components():
    kinds = {kind for kind, _ in CASES}
    assert kinds == set(CHECKS), f"no registered component of kinds {set(CHECKS) - kinds}"


@pytest.mark.parametrize("kind,name", CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_component_conforms(kind, name):
    try:
        CHECKS[kind](name)
    except CheckSkipped as why:
        pytest.skip(f"{kind} {name}: {why}")
