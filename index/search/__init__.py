"""Search: fusion of the dense and BM25 rankings, by z-scores or reciprocal ranks (`fusion`),
auto-merge of retrieved children into their parent (`merge`), and the retriever that runs them
over a snapshot (`retriever`). Imports `store` and `models`."""
