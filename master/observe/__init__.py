"""What the master shows: Prometheus metrics and the dashboard."""
