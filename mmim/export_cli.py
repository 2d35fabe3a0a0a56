"""``mmim export RUN``: the generic encoder export, plus each plugin's own format where it has one."""

from __future__ import annotations

import json
from pathlib import Path

from mmim import registry
from mmim.export import export_encoder, load_run

FORMATS = ("mmim", "transformers")


def export_run(run: str | Path, out: str | Path | None = None, fmt: str = "mmim", encoder_only: bool = False
               ) -> list[Path]:
    """Export a run's encoder into ``out`` (default ``<run>/export``); return the files written.

    A single-stream model whose tokenizer's plugin registers an ``exporter`` (the image plugin:
    timm) also gets that format, in a subfolder named after it.

    ``fmt="transformers"`` writes instead a Hugging Face ``transformers`` ``save_pretrained`` folder
    (default ``<run>/export/transformers``) through the exporter that the plugin of the model's
    tokenizer registers under the name ``transformers`` (image: ``ViTMAEForPreTraining``, video:
    ``VideoMAEForPreTraining``); a model without one raises a one-line :class:`ValueError`. ``encoder_only``
    writes the encoder alone (``ViTMAEModel`` / ``VideoMAEModel``): the folder ``AutoModel`` loads with no
    unexpected key (a pre-training folder gives it the decoder's keys as unexpected, as transformers reports for
    the hub's own pre-training checkpoints).
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if encoder_only and fmt == "mmim":
        raise ValueError("--encoder-only is for --format transformers (the mmim format holds the encoder alone already)")
    recipe, model, step = load_run(run)
    run_dir = Path(run) if Path(run).is_dir() else Path(run).parent
    metrics = json.loads((run_dir / "eval.json").read_text()) if (run_dir / "eval.json").exists() else {}
    if fmt != "mmim":
        out_dir = Path(out) if out else run_dir / "export" / fmt
        return [format_exporter(recipe, fmt)(model, recipe, out_dir, metrics=metrics,
                                                  **({"encoder_only": True} if encoder_only else {}))]
    out_dir = Path(out) if out else run_dir / "export"
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


def format_exporter(recipe, fmt: str):  # noqa: ANN001, ANN201 - a Recipe; the plugin's exporter
    """The exporter registered as ``fmt`` by the plugin of the recipe's one tokenizer; a
    :class:`ValueError` in one line when the model has no such counterpart."""
    streams = [(name, s) for name, s in recipe.model.streams.items() if s.tokenizer is not None]
    if len(streams) != 1 or recipe.model.fusion is not None:
        raise ValueError(f"{recipe.name}: a fused model (streams {', '.join(n for n, _ in streams)}) has no {fmt} "
                         "counterpart; transformers holds single-stream image (ViTMAE) and video (VideoMAE) models")
    name, cfg = streams[0]
    plugin = registry.qualified_name("tokenizer", cfg.tokenizer["name"]).split(":")[0]
    if fmt not in registry.plugins()[plugin].components.get("exporter", {}):
        raise ValueError(f"{recipe.name}: the {plugin} plugin's model (stream {name!r}, tokenizer "
                         f"{cfg.tokenizer['name']!r}) has no {fmt} counterpart; transformers holds image (ViTMAE) and "
                         "video (VideoMAE) models")
    return registry.resolve("exporter", f"{plugin}:{fmt}")
