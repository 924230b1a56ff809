"""Answers, a top stage: extractive answers with checked citations (`extractive`). Imports
`search`, `store` and `models`; never `ingestion`."""
