"""Models, the bottom stage: the embedders (`embedder`: sentence-transformers and the
question encoder), the ONNX export and runtime (`onnx`), and the scoped thread-count helper
(`threads`). Imports nothing else of `index`."""
