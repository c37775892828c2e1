"""Deployment: end-to-end latency and device energy of every evaluated configuration over link and radio
models, the two references (local computing, full offloading), and the planner that picks a split to deploy.

Reads records and profiles only (never a model): ``radio`` (power models as data), ``links`` (link specs over the
runtime's link model), ``profiles`` (device and server profiles), ``options`` (records → configurations),
``model`` (latency and energy per image), ``planner``, ``report`` (tables and figures).
"""
