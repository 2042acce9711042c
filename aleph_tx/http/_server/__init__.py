"""The HTTP server: one handler runner (``exchange``) behind every front."""
