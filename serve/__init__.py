"""deeptrain's Ray Serve application: predictions over HTTP (depends on ``deeptrain``, never the reverse)."""
