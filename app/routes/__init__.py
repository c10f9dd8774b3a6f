"""Routers, one per area: inference (classify), samples, operations (health, ready, info, metrics), web page."""
