"""shopee-match: a notebook research kit for multimodal product matching.

Importing the package is instant: heavy libraries load inside the functions
that use them.
"""

__version__ = "0.1.0"
