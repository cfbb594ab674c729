"""Figures drawn with matplotlib (no display needed) and written as PNG files to any URI."""

import contextlib
from typing import Any, Iterator, Optional, Tuple

from polynet_tf import fileio


def pyplot() -> Any:
    """`matplotlib.pyplot` on the Agg backend.

    Raises:
        ImportError: matplotlib is missing; the message names the extra to install.
    """
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise ImportError("Drawing figures needs matplotlib: "
                          "pip install 'polynet-tf[plot]'.") from None
    return plt


@contextlib.contextmanager
def png_figure(path: str, *subplots_args: Any, save_dpi: Optional[int] = None,
               **subplots_kwargs: Any) -> Iterator[Tuple[Any, Any]]:
    """Yields `(figure, axes)` of `pyplot.subplots(...)`, written to `path` when the block ends.

    On a normal exit the figure is laid out (`tight_layout`) and written as a
    PNG atomically (`fileio.write_figure`); if the block raises, nothing is
    written. The figure is closed either way.

    Args:
        path: the PNG to write, a local path or URI.
        *subplots_args: rows and columns, as `pyplot.subplots` takes them.
        save_dpi: resolution of the file (default: the figure's).
        **subplots_kwargs: `figsize`, `dpi`, `squeeze`, ... for `pyplot.subplots`.
    """
    plt = pyplot()
    figure, axes = plt.subplots(*subplots_args, **subplots_kwargs)
    try:
        yield figure, axes
        figure.tight_layout()
        options = {"dpi": save_dpi} if save_dpi else {}
        fileio.write_figure(figure, path, format="png", **options)
    finally:
        plt.close(figure)
