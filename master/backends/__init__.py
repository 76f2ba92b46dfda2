"""Engines the master can hand tasks to instead of its own pull workers."""
