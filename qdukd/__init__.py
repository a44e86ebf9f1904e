"""qdukd: distil a super-resolution teacher into a low-bit student and ship it."""

__version__ = "0.1.0"
