"""imgwatch: watch photo folders and find similar images."""

__version__ = "0.1.0"
