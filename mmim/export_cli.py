"""``mmim export RUN``: the generic encoder export, plus each plugin's own format where it has one."""

from __future__ import annotations

import json
from pathlib import Path

from mmim import registry
from mmim.export import export_encoder, load_run


def export_run(run: str | Path, out: str | Path | None = None) -> list[Path]:
    """Export a run's encoder into ``out`` (default ``<run>/export``); return the files written.

    A single-stream model whose tokenizer's plugin registers an ``exporter`` (the image plugin:
    timm) also gets that format, in a subfolder named after it.
    """
    recipe, model, step = load_run(run)
    run_dir = Path(run) if Path(run).is_dir() else Path(run).parent
    out_dir = Path(out) if out else run_dir / "export"
    metrics = json.loads((run_dir / "eval.json").read_text()) if (run_dir / "eval.json").exists() else {}
    written, sections = [], []
    streams = [(name, s) for name, s in recipe.model.streams.items() if s.tokenizer is not None]
    if len(streams) == 1 and recipe.model.fusion is None:
        stream, cfg = streams[0]
        try:
            exporter = registry.companion("exporter", cfg.tokenizer["name"])
        except registry.RegistryError:
            exporter = None
        if exporter is not None:
            sub = out_dir / getattr(exporter, "format_name", "plugin")
            written.append(exporter(model, recipe, sub, stream, metrics))
            sections = [f"## Also exported: {sub.name}", "", f"`{sub.name}/` holds the same encoder in the "
                        f"{sub.name} format; see `{sub.name}/README.md`.", ""]
    written.insert(0, export_encoder(model, recipe, out_dir, step=step, metrics=metrics, card_sections=sections))
    return written
