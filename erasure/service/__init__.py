"""The erasure service: the engine behind an HTTP API (`erasure serve`).

    app.py        create_app: the FastAPI app, its routers, errors as problem+json, body limit
    auth.py       bearer tokens ([[service.tokens]], by SHA-256) and roles; the login cookie
    api.py        /v1/requests (submit, list, show, plan, approve, reject, report.pdf) and the
                  OpenLineage receiver /api/v1/lineage
    dashboard.py  the privacy office's dashboard at / (server-rendered HTML)
    worker.py     runs pending approved requests in batches, as `run --pending` does
    webhooks.py   signed POSTs on each status change, retried, recorded

Every request to the service builds its own Engine (the ledger and stores are SQLite
connections, one per thread), acting as the caller's token name.
"""
