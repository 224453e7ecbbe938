"""``assetgen serve``: the engine as an HTTP job service (FastAPI + uvicorn).

    config.py          ServiceConfig (frozen, validated), JobOptions, the serve flags
    jobs_store.py      jobs and states in SQLite (WAL): the queue that survives a killed server
    supervisor.py      the server side of the worker: spawn, dispatch, time limits, restarts, expiry, drain
    worker.py          the worker process: one resident runner, one job at a time, stops at stage boundaries
    runners.py         EngineRunner (the resident Engine) and CardRunner (cheap real jobs for load tests)
    engine_halves.py   the engine's shape and texture halves, each a resident resource set (no Ray import)
    ray_deployments.py --backend ray: the halves as Ray Serve deployments, RayRunner; ray_config.py: RayConfig
    progress_board.py  live stage progress of running jobs, wake-ups for the event streams
    app.py             the routes; http_support.py: errors, upload gate, picture check, the job's view
    metrics.py         Prometheus text; logs.py: JSON log lines
    server.py          uvicorn with a graceful stop; client.py: a stdlib Python client

Nothing here is imported by the engine; FastAPI and uvicorn are needed only by ``app.py`` and ``server.py``
(the ``service`` extra), Ray only by ``ray_deployments.py`` (the ``ray`` extra).
"""
