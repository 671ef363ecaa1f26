"""Build-time pipeline: fine-tune all-MiniLM-L6-v2 on STS-B and export it as one ONNX graph.

Heavy libraries (torch, sentence-transformers, onnxruntime's tools) are imported inside the functions that need them,
so ``export.data`` stays usable from a runtime-only environment.
"""
