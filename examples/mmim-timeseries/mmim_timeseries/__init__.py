"""Example third-party mmim plugin: a 1-D multichannel time-series modality (PatchTST-style).

Only the :class:`~mmim.registry.Plugin` declaration lives here. Components are named as
``"module:attribute"`` strings, so ``mmim plugins`` can list this plugin without importing
torch-heavy modules; each component is imported the first time a recipe names it.
"""

from mmim.registry import Plugin

plugin = Plugin(
    name="timeseries",
    description="1-D multichannel time series: patch tokens, span masking, procedural synthetic signals",
    modality="timeseries",
    components={
        "tokenizer": {"series_patch": "mmim_timeseries.tokenizer:SeriesPatchTokenizer"},
        "masker": {"span": "mmim_timeseries.masker:SpanMasker"},
        "dataset": {"synthetic_signals": "mmim_timeseries.datasets:SyntheticSignals"},
        "visualizer": {"series_patch": "mmim_timeseries.visualize:SeriesVisualizer"},
    },
    recipes="mmim_timeseries/recipes",
    default_recipe="mae_timeseries.yaml",
)
