"""The task store and the service around it: leases, workers, timings, the journal."""
