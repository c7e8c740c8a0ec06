"""vprlab: an experiment framework for Visual Place Recognition built around BoQ."""

__version__ = "0.1.0"
