"""deeptrain: a self-hostable deep-training service for images."""

__version__ = "0.1.0"
