"""The engines behind the gateway.

`connection`: the HTTP/1.1 wire to an engine (one keep-alive connection, the response it carries,
parsed by httptools); `client`: the connection pool per engine and the request API; `pool`: the
set of engines, their health checks and the least-in-flight choice.
"""
