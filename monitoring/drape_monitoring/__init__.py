"""drape_monitoring: the golden-request prober and the Prometheus rule tooling for the drape service.

Torch-free: it runs in the serving image next to Triton and talks to it only through the thin client.
"""
