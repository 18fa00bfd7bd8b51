"""The iotbaseline service: a REST API (OpenAPI 3 at /api/openapi.json), a server-rendered
dashboard and the scheduler loop over one scan history store, behind API tokens.

``iotbaseline serve --listen HOST:PORT --store URL --authorised CIDR…`` runs it; scans it starts
must lie inside the authorised scope, checked before anything is contacted.
"""
