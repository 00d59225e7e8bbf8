"""Console page modules; each exposes a `router`."""
