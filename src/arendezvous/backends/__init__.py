"""The bundled backends. Store clients are imported only when their backend is used."""
