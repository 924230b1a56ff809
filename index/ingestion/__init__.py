"""Ingestion, the top stage: files found and read (`documents`: formats, headings, the
confinement of what is read), cut into a node tree (`chunking`), embedded and written as a
snapshot by the asyncio pipeline (`pipeline`), or with its embedding stage on Ray
(`ray_engine`). Imports `store` and `models`; never `answer`.

Named `ingestion`, not `ingest`: `index.ingest` is the public ingestion function.
"""
