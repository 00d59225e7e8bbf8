"""The OpenAI-compatible gateway: ingress, the relay of one call, SSE, the context cap."""
