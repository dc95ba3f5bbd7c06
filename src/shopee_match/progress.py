"""Progress: bars for long steps (notebook widgets where ipywidgets is installed, as in Colab
and JupyterLab, text elsewhere, instead of tqdm.auto's warning when widgets are missing, as
under papermill), and the kit's log lines, which the notebooks and the CLI show."""

from __future__ import annotations

import logging
import sys


def progress_bar(iterable=None, **kwargs):
    """A ``tqdm`` bar over ``iterable`` (or a manual one with ``total=``)."""
    try:
        import ipywidgets  # noqa: F401  (tqdm.auto needs it for notebook bars)
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm import tqdm
    return tqdm(iterable, **kwargs)


def quiet_model_libraries() -> None:
    """Import ``tqdm.auto`` once with its "IProgress not found" warning silenced, and turn off
    transformers' "Loading weights" bar.

    Model libraries (transformers, sentence-transformers) import ``tqdm.auto``; without
    ipywidgets it warns into every notebook. Python caches the import, so the warning never
    comes back in this process. Call it before loading any model.
    """
    import warnings

    from tqdm import TqdmWarning

    with warnings.catch_warnings():  # transformers imports tqdm.auto too: after it, inside
        warnings.simplefilter("ignore", TqdmWarning)
        import tqdm.auto  # noqa: F401
        from transformers.utils import logging as transformers_logging
    transformers_logging.disable_progress_bar()


class _KitLines(logging.StreamHandler):
    """The kit's log lines on ``sys.<name>`` as it is when each line is written (so a
    notebook's or a test's redirected stream gets them)."""

    def __init__(self, name: str):
        super().__init__()
        self.name_of_stream = name
        self.setFormatter(logging.Formatter("shopee-match: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = getattr(sys, self.name_of_stream)
        super().emit(record)


def show_logs(stream: str = "stdout") -> None:
    """Show what the kit is doing: its INFO log lines (and warnings) on ``stream``
    (``"stdout"`` or ``"stderr"``); calling it again changes nothing."""
    kit = logging.getLogger("shopee_match")
    if not any(isinstance(h, _KitLines) for h in kit.handlers):
        kit.addHandler(_KitLines(stream))
    kit.setLevel(logging.INFO)
