"""tlkit-filterbank: a worked example of a third-party tlkit plugin.

This module *is* the plugin: the entry point ``filterbank = "tlkit_filterbank"`` in the ``tlkit``
group names it, and tlkit calls its two ``@hookimpl`` functions. They add

- the backbone ``filterbank`` (alias ``sobel_gabor``): the lecture's filter-bank idea, a bank of
  fixed Sobel and Gabor filters, rectified and max-pooled (see :class:`tlkit_filterbank.bank.FilterBank`);
- the interpreter ``filterbank_responses``: each filter of that bank drawn above its response to
  one image (see :mod:`tlkit_filterbank.responses`).

torch and matplotlib are imported only when a component is built, so that loading the plugin (as
``tlkit list`` does) stays fast.
"""

import difflib

from tlkit import hookimpl

__version__ = "0.1.0"
__all__ = ["FilterBank", "make_filterbank", "make_filterbank_responses"]

#: Options of the ``filterbank`` backbone, i.e. the keyword arguments of ``FilterBank``.
BACKBONE_OPTIONS = ("frequencies", "angles", "kernel_size", "sigma", "colour", "pool", "rectify")
#: Options of the ``filterbank_responses`` interpreter.
INTERPRETER_OPTIONS = ("columns",)


def make_filterbank(*, pretrained: bool = False, **options):
    """Build the ``filterbank`` backbone: images ``(B, 3, H, W)`` -> features ``(B, C, H/pool, W/pool)``.

    ``options`` are the keyword arguments of ``FilterBank`` (``frequencies``, ``angles``,
    ``kernel_size``, ``sigma``, ``colour``, ``pool``, ``rectify``); an unknown name raises
    ``ValueError`` listing the valid ones. ``pretrained`` is accepted and changes nothing: the
    filters are fixed formulas, not learned, so they are the same "pretrained" or not and there are
    no weights to download.
    """
    _check_names(options, BACKBONE_OPTIONS, "the filterbank backbone")
    from tlkit_filterbank.bank import FilterBank

    return FilterBank(**options)


def make_filterbank_responses(**options):
    """Build the ``filterbank_responses`` interpreter.

    Option ``columns`` (int, default 8): filters per row of the figure. Returns
    ``interpreter(model, image, *, target=None, layer=None) -> tlkit.interpret.Explanation``; see
    :func:`tlkit_filterbank.responses.explain` for what it does with them.
    """
    _check_names(options, INTERPRETER_OPTIONS, "the filterbank_responses interpreter")
    columns = options.get("columns", 8)
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be a positive int (filters per row), got {columns!r}")

    def interpreter(model, image, *, target=None, layer=None):
        from tlkit_filterbank.responses import explain

        return explain(model, image, target=target, layer=layer, columns=columns)

    return interpreter


@hookimpl
def register_backbones(register):
    register("filterbank", make_filterbank, aliases=("sobel_gabor",),
             description="Fixed Sobel + Gabor filter bank, rectified and max-pooled (nothing to learn)")


@hookimpl
def register_interpreters(register):
    register("filterbank_responses", make_filterbank_responses,
             description="Each filter of a 'filterbank' backbone above its response to the image")


def _check_names(options, valid, what):
    for name in options:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown option {name!r} for {what}.{hint} "
                             f"Valid options: {', '.join(valid)}")


def __getattr__(name):
    # The module class needs torch; import it when someone asks for it, not when tlkit loads us.
    if name == "FilterBank":
        from tlkit_filterbank.bank import FilterBank

        return FilterBank
    raise AttributeError(f"module 'tlkit_filterbank' has no attribute {name!r}")
