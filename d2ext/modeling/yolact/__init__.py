"""yolact (registration happens on import)."""
