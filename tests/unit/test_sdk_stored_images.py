"""The SDK reads stored outputs (the worker's OUTPUT_STORE) as references with their key,
digest and size, named after their key when the connector gave no file name (A1111)."""

from __future__ import annotations

from emp.images import Image, images_of

URL = "https://emp-outputs.r2.example/outputs/acme/job-1/0-image.png?X-Amz-Signature=abc"


def test_a_stored_a1111_image_is_a_reference_named_after_its_key() -> None:
    entry = {
        "url": URL,
        "key": "outputs/acme/job-1/0-image.png",
        "bytes": 1234,
        "sha256": "ab" * 32,
        "content_type": "image/png",
        "width": 512,
        "height": 768,
    }
    assert images_of({"images": [entry]}) == [
        Image(
            filename="0-image.png",
            content_type="image/png",
            url=URL,
            size=1234,
            key="outputs/acme/job-1/0-image.png",
            sha256="ab" * 32,
            width=512,
            height=768,
        )
    ]


def test_a_stored_comfyui_output_keeps_its_node_and_file_name() -> None:
    entry = {
        "node": "9",
        "filename": "ComfyUI_00001_.png",
        "subfolder": "",
        "type": "output",
        "url": URL,
        "key": "outputs/acme/job-1/0-ComfyUI_00001_.png",
        "bytes": 10,
        "sha256": "cd" * 32,
        "content_type": "image/png",
    }
    [image] = images_of({"images": [entry]})
    assert (image.filename, image.node, image.inline, image.width) == (
        "ComfyUI_00001_.png",
        "9",
        False,
        None,
    )
