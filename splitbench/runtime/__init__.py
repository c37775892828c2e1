"""The runtime: a trained run's device half as a bundle that runs without PyTorch, and the server that decodes it.

* :mod:`~splitbench.runtime.export` (torch): ``splitbench export RUN_DIR --out BUNDLE`` writes the device network
  as ONNX, the coder's tables as ``.npz`` and a ``manifest.json`` (file hashes, input spec, model fingerprint).
* :mod:`~splitbench.runtime.device` (numpy + onnxruntime + constriction, no torch): loads a bundle, checks it,
  and turns images into one splitbench bitstream per sample.
* :mod:`~splitbench.runtime.server` (torch): the run's server half, which checks a bundle's fingerprint and
  decodes its streams (each with the entropy coder recorded in it).
* :mod:`~splitbench.runtime.bundle` and :mod:`~splitbench.runtime.fingerprint` are shared and torch-free.
* ``splitbench serve`` (torch): :mod:`~splitbench.runtime.serve` runs :mod:`~splitbench.runtime.app` (FastAPI) on
  uvicorn, which batches requests with :mod:`~splitbench.runtime.batcher` for a
  :class:`~splitbench.runtime.server.Server`.
* ``splitbench device`` (torch-free): :mod:`~splitbench.runtime.client` sends a device's streams over a link
  emulated by :mod:`~splitbench.runtime.link`; :mod:`~splitbench.runtime.protocol` holds the routes and headers.
* The full-offloading reference: ``serve RUN_DIR --codec jpeg`` (:mod:`~splitbench.runtime.codec_server`, torch)
  and ``device --codec jpeg`` (:mod:`~splitbench.runtime.codec_device`, torch-free) send whole image files.

This package's ``__init__`` imports nothing, so the device side never pulls in torch.
"""
