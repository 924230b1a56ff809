"""API tests: the HTTP service against a real index and the real model."""
