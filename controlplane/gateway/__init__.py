"""The OpenAI-compatible gateway: one inference call from the socket to its audit entry.

`ingress` (how a call comes in: the fast path and `relay`), `routes` (the /v1 API in OpenAPI),
`request` (reading and checking a request), `call` (the state machine of one call:
admission, the engine, the answer), `call_audit` (its two audit entries and what an answer waits
for), `sse` (the event-stream relay), `context_cap` (a tenant's prompt + completion cap),
`errors` (why the gateway does not relay a call).
"""
