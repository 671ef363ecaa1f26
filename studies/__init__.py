"""One-off measurements behind the runtime's design decisions, each run as ``python -m studies.<name>``.

``kernels`` (int8 GEMM rates against the machine's ceiling), ``profile`` (op-type shares of a graph's time),
``crosscpu`` (the same text's vector on this CPU and an emulated AVX2 one), ``precision`` (compact output types),
``soak`` (RSS over 100,000 texts), ``corpus`` (corpus jobs: streaming, Ray layouts, actor scaling, memory by stage)
and ``corpus_memory`` (its per-stage memory child). They reuse the peer comparison's pieces from ``benchmarks`` and
write their results beside its own, in ``benchmarks/results/``.
"""
