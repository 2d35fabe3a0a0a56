"""Make ``mmim_timeseries`` importable from a checkout even when the package is not installed."""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("mmim_timeseries") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
