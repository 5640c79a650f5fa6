"""postprocess (registration happens on import)."""
