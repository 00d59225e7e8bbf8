"""Usage counting (per tenant and day) and the Prometheus metrics."""
