"""Unit tests of touchpoint.schemas: registry, codec and compatibility check."""
