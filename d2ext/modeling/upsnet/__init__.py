"""upsnet (registration happens on import)."""
