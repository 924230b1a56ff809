"""Storage: the node tree and its level dictionary (`tree`), leaf vectors in FAISS (`vectors`)
or Milvus (`milvus`), chosen in one place (`backends`), BM25 (`lexical`), sentence vectors for
answers (`sentences`), and the crash-safe snapshot directory that holds them all (`snapshot`).
Imports only `models` below it."""
