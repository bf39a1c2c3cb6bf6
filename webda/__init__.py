"""webda: image-to-video domain adaptation with web supervision (Kae & Song).

The method on top of :mod:`webda_kernels`: data, models, two-stage trainer, evaluation,
reports and the ``webda`` command line (``webda --help``).
"""

__version__ = "0.1.0"
