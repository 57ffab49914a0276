"""The agent: receives run requests for its node and executes them with executor plugins."""
