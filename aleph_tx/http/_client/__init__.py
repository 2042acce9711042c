"""The HTTP client: request building, the pool and its connections."""
