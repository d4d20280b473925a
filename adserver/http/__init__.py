"""The ad server's HTTP edge: protocol, fast path, middleware, responses, routes, health, OpenAPI, metrics."""
