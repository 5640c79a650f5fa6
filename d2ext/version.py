"""The d2ext version: read by ``setup.py`` (without importing d2ext) and ``d2ext.__version__``."""

__version__ = "0.1.0"
