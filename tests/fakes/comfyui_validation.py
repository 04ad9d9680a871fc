"""`POST /prompt` validation as ComfyUI 0.8.0 does it, for the classes in the recorded subset.

The error shapes, messages and even the odd attribution of a bad link (reported on the node
that is linked *to*, under the input name of the node linking *from*) follow the recordings in
tests/fixtures/comfyui/prompt_error_*.json, which test_fake_comfyui.py compares against.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "comfyui"


def load_recording(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return data


def recorded_object_info() -> dict[str, Any]:
    info: dict[str, Any] = {}
    for step in load_recording("object_info_subset")["steps"]:
        info.update(step["response"]["json"])
    return info


def _error(kind: str, message: str, details: str = "") -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


class Rejected(Exception):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body["error"]["type"])
        self.body = body


def validate_prompt(
    prompt: Any, object_info: Mapping[str, Any]
) -> tuple[list[str], dict[str, Any]]:
    """(output node ids to execute, node_errors); raises Rejected for a 400."""
    if not isinstance(prompt, Mapping):
        raise Rejected(
            {"error": _error("invalid_prompt", "Prompt is not a dict"), "node_errors": {}}
        )
    for node_id, node in prompt.items():
        class_type = node.get("class_type") if isinstance(node, Mapping) else None
        if class_type is None:
            message = "Cannot execute because a node is missing the class_type property."
            error = _error("invalid_prompt", message, f"Node ID '#{node_id}'")
            raise Rejected({"error": error, "node_errors": {}})
        if class_type not in object_info:
            message = f"Cannot execute because node {class_type} does not exist."
            error = _error("invalid_prompt", message, f"Node ID '#{node_id}'")
            raise Rejected({"error": error, "node_errors": {}})
    outputs = sorted(
        node_id
        for node_id, node in prompt.items()
        if object_info[node["class_type"]].get("output_node")
    )
    if not outputs:
        raise Rejected(
            {"error": _error("prompt_no_outputs", "Prompt has no outputs"), "node_errors": {}}
        )
    validated: dict[str, tuple[bool, list[dict[str, Any]]]] = {}
    good: list[str] = []
    node_errors: dict[str, Any] = {}
    for output in outputs:
        try:
            ok = _validate_node(prompt, output, object_info, validated)
        except Exception as exc:  # ComfyUI reports these on the output node itself
            validated[output] = (False, [_exception_error("exception_during_validation", exc)])
            ok = False
        if ok:
            good.append(output)
            continue
        for node_id, (node_ok, reasons) in validated.items():
            if node_ok or not reasons:
                continue
            entry = node_errors.setdefault(
                node_id,
                {
                    "errors": reasons,
                    "dependent_outputs": [],
                    "class_type": prompt[node_id]["class_type"],
                },
            )
            entry["dependent_outputs"].append(output)
    if not good:
        error = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation")
        raise Rejected({"error": error, "node_errors": node_errors})
    return good, node_errors


def _exception_error(kind: str, exc: Exception) -> dict[str, Any]:
    return {
        "type": kind,
        "message": "Exception when validating node",
        "details": str(exc),
        "extra_info": {"exception_type": type(exc).__name__, "traceback": []},
    }


def _validate_node(
    prompt: Mapping[str, Any],
    node_id: str,
    object_info: Mapping[str, Any],
    validated: dict[str, tuple[bool, list[dict[str, Any]]]],
) -> bool:
    if node_id in validated:
        return validated[node_id][0]
    node = prompt[node_id]
    info = object_info[node["class_type"]]["input"]
    inputs = node.get("inputs") or {}
    reasons: list[dict[str, Any]] = []
    ok = True
    specs = {**info.get("required", {}), **info.get("optional", {})}
    for name in info.get("required", {}):
        if name not in inputs:
            reasons.append(
                {
                    "type": "required_input_missing",
                    "message": "Required input is missing",
                    "details": name,
                    "extra_info": {"input_name": name},
                }
            )
            ok = False
    for name, value in inputs.items():
        spec = specs.get(name)
        if spec is None:
            continue
        if isinstance(value, list):
            linked = value[0]
            _ = prompt[linked]["class_type"]  # KeyError for a link to a missing node, as upstream
            try:
                if not _validate_node(prompt, linked, object_info, validated):
                    ok = False
            except Exception as exc:
                ok = False
                validated[linked] = (False, [_inner_error(name, spec, value, exc)])
            continue
        problem = _check_value(name, spec, value)
        if problem is not None:
            reasons.append(problem)
            ok = False
    validated[node_id] = (ok, reasons)
    return ok


def _inner_error(name: str, spec: list[Any], link: list[Any], exc: Exception) -> dict[str, Any]:
    return {
        "type": "exception_during_inner_validation",
        "message": "Exception when validating inner node",
        "details": str(exc),
        "extra_info": {
            "input_name": name,
            "input_config": spec,
            "exception_message": str(exc),
            "exception_type": type(exc).__name__,
            "traceback": [f'  File "fake_comfyui.py", in validate_inputs\n    {exc!r}\n'],
            "linked_node": link,
        },
    }


def _check_value(name: str, spec: list[Any], value: Any) -> dict[str, Any] | None:
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
    extra = {"input_name": name, "input_config": spec, "received_value": value}
    if kind in ("INT", "FLOAT"):
        convert = int if kind == "INT" else float
        try:
            number = convert(value)
        except (TypeError, ValueError) as exc:
            return {
                "type": "invalid_input_type",
                "message": f"Failed to convert an input value to a {kind} value",
                "details": f"{name}, {value}, {exc}",
                "extra_info": {**extra, "exception_message": str(exc)},
            }
        if "min" in options and number < options["min"]:
            return {
                "type": "value_smaller_than_min",
                "message": f"Value {number} smaller than min of {options['min']}",
                "details": name,
                "extra_info": extra,
            }
        if "max" in options and number > options["max"]:
            return {
                "type": "value_bigger_than_max",
                "message": f"Value {number} bigger than max of {options['max']}",
                "details": name,
                "extra_info": extra,
            }
    return None
