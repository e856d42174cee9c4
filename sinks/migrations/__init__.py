"""Versioned warehouse migrations (SQL files applied in order)."""
