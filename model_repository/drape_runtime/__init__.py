"""What the Triton python models import at run time, and nothing else: image decoding and its limits (``codec``),
pre/post-processing (``prepost``), the batched ONNX Runtime runner (``runner``) and the typed model config
(``model_config``). Torch-free; builds on ``drape_core`` (the contract, geometry, recolor policy). Developer tools
(launcher, gateway, health probe, plan check, in-process reference) live in ``drape_serving``.
"""
