"""The engines behind the gateway.

`client`: the HTTP/1.1 keep-alive client (one pool of connections per engine); `pool`: the
set of engines, their health checks and the least-in-flight choice.
"""
