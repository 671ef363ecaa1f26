"""Logistics of the one-shot GPU run, not measurements: ``python -m tools.gpu_payload`` builds what the GPU machine
needs (``fatbin`` prunes onnxruntime-gpu's CUDA library, ``graph_weights`` rebuilds the fp16 checkpoint from the fp16
graph there), ``bash tools/gpu_device.sh`` runs it, ``bash tools/ray_wheels.sh`` packs Ray for it.
"""
