"""The Dkron-compatible REST API (Litestar)."""
