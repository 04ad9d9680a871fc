"""The images in a job's result, whichever connector made them.

- ComfyUI (`worker/connectors/comfyui_transfer.py`): `result.images` is a list of objects
  `{node, filename, subfolder, type, content_type, bytes, base64 | url}`: the file inline
  (base64) while the job's inline budget lasts, else only a reference with the URL of
  ComfyUI's `/view` on the worker's side (which may not be reachable from the client).
- AUTOMATIC1111 (`worker/connectors/a1111.py`): `result.images` is a list of base64 PNGs.
- Either, with the worker's OUTPUT_STORE set (`worker/connectors/output_store.py`): objects
  `{url, key, bytes, sha256, content_type, width?, height?}` (+ ComfyUI's node, filename ...),
  `url` a presigned GET of the object store that any HTTP client can fetch until it expires
  (GET /jobs/{id} signs a fresh one when the hub can).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emp._fields import Fields
from emp.errors import ProtocolError


@dataclass(frozen=True, slots=True)
class Image:
    """One output file: its bytes when the worker sent them inline, else its URL."""

    filename: str
    content_type: str | None = None
    data: bytes | None = None
    url: str | None = None
    size: int | None = None  # bytes, as the worker measured them
    node: str | None = None  # the ComfyUI node that produced it
    subfolder: str = ""
    type: str = "output"
    key: str | None = None  # its key in the output store, when the worker stored it there
    sha256: str | None = None  # of the stored bytes, to check a download against
    width: int | None = None
    height: int | None = None

    @property
    def inline(self) -> bool:
        return self.data is not None

    def save(self, directory: str | Path) -> Path:
        """Write the bytes to `directory/filename` and return the path. Only inline images
        can be saved; a reference has just its `url`."""
        if self.data is None:
            raise ValueError(f"{self.filename} was not sent inline; fetch it from {self.url}")
        # Never trust a name from the network with a path: keep its last component only.
        target = Path(directory) / (Path(self.filename).name or "image")
        target.write_bytes(self.data)
        return target


def images_of(result: Any) -> list[Image]:
    """Every image in a job result; [] when the result has none."""
    if not isinstance(result, Mapping):
        return []
    entries = result.get("images")
    if not isinstance(entries, list):
        return []
    return [_image(entry, i) for i, entry in enumerate(entries)]


def _image(entry: Any, index: int) -> Image:
    if isinstance(entry, str):  # A1111: a bare base64 PNG
        png = _decode(entry, index)
        return Image(f"image-{index}.png", "image/png", png, size=len(png))
    f = Fields(entry, f"result.images[{index}]")
    encoded = f.opt_text("base64")
    data = _decode(encoded, index) if encoded is not None else None
    key = f.opt_text("key")
    stored_name = key.rsplit("/", 1)[-1] if key else None
    return Image(
        filename=f.text("filename", stored_name or f"image-{index}"),
        content_type=f.opt_text("content_type"),
        data=data,
        url=f.opt_text("url"),
        size=f.opt_integer("bytes"),
        node=f.opt_text("node"),
        subfolder=f.text("subfolder"),
        type=f.text("type", "output"),
        key=key,
        sha256=f.opt_text("sha256"),
        width=f.opt_integer("width"),
        height=f.opt_integer("height"),
    )


def _decode(text: str, index: int) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"result.images[{index}]: not valid base64") from None
