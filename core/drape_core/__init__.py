"""What every stage shares, torch-free: the serving contract (``contract``), the model card (``card``), the
letterbox geometry (``geometry``), colour science (``colour``), the recolor keep-gate and still fallback
(``recolor_policy``) and TensorRT plan compatibility (``plans``). It imports no other drape package
(tests/test_architecture.py checks the data flow).
"""
