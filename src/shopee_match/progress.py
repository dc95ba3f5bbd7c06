"""Progress bars: notebook widgets where ipywidgets is installed (Colab, JupyterLab), text
elsewhere, instead of tqdm.auto's warning when widgets are missing (as under papermill)."""

from __future__ import annotations


def progress_bar(iterable=None, **kwargs):
    """A ``tqdm`` bar over ``iterable`` (or a manual one with ``total=``)."""
    try:
        import ipywidgets  # noqa: F401  (tqdm.auto needs it for notebook bars)
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm import tqdm
    return tqdm(iterable, **kwargs)


def silence_widget_warning() -> None:
    """Import ``tqdm.auto`` once with its "IProgress not found" warning silenced.

    Model libraries (transformers, sentence-transformers) import it; without
    ipywidgets it warns into every notebook. Python caches the import, so the
    warning never comes back in this process.
    """
    import warnings

    from tqdm import TqdmWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmWarning)
        import tqdm.auto  # noqa: F401
