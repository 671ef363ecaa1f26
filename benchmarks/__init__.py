"""Benchmark of this runtime against its peers on the same fine-tuned weights: ``python -m benchmarks``.

Layout: ``systems`` declares what is compared, ``peers/`` has one adapter per peer, ``runner`` starts one fresh
``worker`` process per system and measurement, ``summary`` turns raw numbers into the result document, ``report`` and
``chart`` render it into ``results/<machine>.md`` and ``.png``. Separate scripts: ``gpu`` (runtime fp16 on CUDA vs
PyTorch) and ``serve_bench`` (the HTTP server vs the library and infinity-emb). ``results/`` also holds the
results of ``studies``.
"""
