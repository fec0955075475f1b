"""The read-only web page, JSON API and metrics (issue #8; docs/web.md).

FastAPI, Starlette and uvicorn are imported only inside this package.
"""
