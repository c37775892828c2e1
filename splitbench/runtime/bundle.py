"""The bundle on disk: its file names, its manifest, and the check that every file is the one exported.

A bundle is a folder::

    device.onnx     the device network: [0, 1] float32 RGB images (N, 3, H, W) -> the latent y (N, C, h, w)
    tables.npz      the coder's tables, numpy arrays only (np.load(..., allow_pickle=False))
    manifest.json   what the device must feed, how it codes, the sha256 of each file, the model fingerprint

Torch-free: the device loads bundles with this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from splitbench.errors import SplitbenchError
from splitbench.hashing import sha256_file

FORMAT = 1  # the bundle layout; a reader refuses others
NETWORK = "device.onnx"
TABLES = "tables.npz"
MANIFEST = "manifest.json"


class BundleError(SplitbenchError):
    """A bundle is missing, incomplete, modified or of another format; the message names the file."""


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """The manifest with the hash of every file already in ``folder`` (the network and the tables)."""
    files = {name: sha256_file(folder / name) for name in (NETWORK, TABLES)}
    (folder / MANIFEST).write_text(json.dumps({**manifest, "format": FORMAT, "files": files}, indent=2) + "\n")


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of the bundle ``folder``, after checking that each file it lists has the hash it records."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(f"no bundle at {folder}: {MANIFEST} is missing; export one with splitbench export")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{path} is not valid JSON ({error}); export the bundle again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise BundleError(f"{path}: bundle format {got!r}, this reader reads format {FORMAT}; export it again")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != {NETWORK, TABLES}:
        raise BundleError(f"{path} must list the hashes of {NETWORK} and {TABLES}; export the bundle again")
    for name, expected in files.items():
        file = folder / name
        if not file.is_file():
            raise BundleError(f"bundle {folder} lacks {name}; export it again")
        if sha256_file(file) != expected:
            raise BundleError(f"{file} was modified since export (sha256 differs from the manifest's); "
                              f"export the bundle again")
    return manifest
