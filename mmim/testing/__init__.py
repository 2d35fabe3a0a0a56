"""Test helpers that plugin authors can use: the conformance kit."""
