"""Watching roots, settling file events, reconciling and enqueueing work."""
