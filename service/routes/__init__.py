"""HTTP routes: each validates input, calls the engine, and maps errors to status codes."""
