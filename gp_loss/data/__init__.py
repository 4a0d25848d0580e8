"""Built-in data (no download)."""
