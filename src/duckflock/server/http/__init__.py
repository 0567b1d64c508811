"""The HTTP skin over the serving service (needs the ``server`` extra).

- :mod:`.app`: ``create_app``: routes, middleware, error handlers, lifespan;
- :mod:`.api`: :class:`~.api.HttpApi`, the handlers the route table names;
- :mod:`.bodies`: request bodies, read within a memory budget;
- :mod:`.params`: query parameters, each given at most once;
- :mod:`.render`: results streamed in JSON, NDJSON, CSV, Arrow or Parquet;
- :mod:`.edge`: the outermost middleware (request metrics, last-resort errors);
- :mod:`.openapi`: the OpenAPI document, from the route table.
"""
