"""The worker: derived data kept current, old data out.

`metro worker` runs it (worker.runner): it holds the worker lease, calls
run_rollup() while rows wait and run_maintenance() every few minutes.
`metro worker --status` reports on it (worker.status).
"""
