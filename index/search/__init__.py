"""Search: reciprocal rank fusion of the dense and BM25 rankings (`fusion`), auto-merge of
retrieved children into their parent (`merge`), and the retriever that runs them over a
snapshot (`retriever`). Imports `store` and `models`."""
