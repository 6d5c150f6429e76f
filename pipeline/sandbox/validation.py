"""Request validation driven by the AWS service model, as the real front door does it.

botocore already checks required members and minimum lengths on the client side; the server
side (this) also checks maximum lengths, ranges, enums and patterns, and words the error the
way AWS does: ``1 validation error detected: Value '…' at 'resourceIds' failed to satisfy
constraint: Member must have length less than or equal to 100``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache, lru_cache
from typing import Any

import botocore.session
from botocore.model import OperationModel, Shape


@cache
def operation_model(service: str, operation: str) -> OperationModel:
    model = botocore.session.get_session().get_service_model(service)
    return model.operation_model(operation)


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    # AWS models escape their regular expressions twice (``\\+[1-9]\\d{1,14}$``).
    return re.compile(pattern.replace("\\\\", "\\"))


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _check(shape: Shape, value: Any, path: str, errors: list[str]) -> None:
    meta = shape.metadata
    fail = f"Value '{_shown(value)}' at '{path}' failed to satisfy constraint: Member must "
    if shape.type_name == "structure":
        if not isinstance(value, dict):
            return
        errors.extend(
            f"Value null at '{_join(path, name)}' failed to satisfy constraint: "
            "Member must not be null"
            for name in shape.required_members
            if value.get(name) is None
        )
        for name, member in shape.members.items():
            if value.get(name) is not None:
                _check(member, value[name], _join(path, name), errors)
    elif shape.type_name in ("list", "map", "string"):
        if not isinstance(value, list | dict | str):
            return
        if "min" in meta and len(value) < meta["min"]:
            errors.append(fail + f"have length greater than or equal to {meta['min']}")
        if "max" in meta and len(value) > meta["max"]:
            errors.append(fail + f"have length less than or equal to {meta['max']}")
        if shape.type_name == "list" and isinstance(value, list):
            for item in value:
                _check(shape.member, item, f"{path}.member", errors)
        elif shape.type_name == "string" and isinstance(value, str):
            if shape.enum and value not in shape.enum:
                errors.append(fail + f"satisfy enum value set: [{', '.join(shape.enum)}]")
            if "pattern" in meta and not _compiled(meta["pattern"]).fullmatch(value):
                errors.append(fail + f"satisfy regular expression pattern: {meta['pattern']}")
    elif shape.type_name in ("integer", "long") and isinstance(value, int):
        if "min" in meta and value < meta["min"]:
            errors.append(fail + f"have value greater than or equal to {meta['min']}")
        if "max" in meta and value > meta["max"]:
            errors.append(fail + f"have value less than or equal to {meta['max']}")


def _join(path: str, name: str) -> str:
    return f"{path}.{_camel(name)}" if path else _camel(name)


def validation_message(service: str, operation: str, params: dict[str, Any]) -> str | None:
    """The AWS-worded validation error for ``params``, or None when they are valid."""
    shape = operation_model(service, operation).input_shape
    if shape is None:
        return None
    errors: list[str] = []
    _check(shape, params, "", errors)
    if not errors:
        return None
    noun = "error" if len(errors) == 1 else "errors"
    return f"{len(errors)} validation {noun} detected: " + "; ".join(errors)


class ValidatingResponse:
    """Mixin for the sandbox's moto responses classes: ``self.validated()`` returns the parsed
    request parameters once they pass the model's constraints, or raises the service's own
    validation error (``validation_error``) with AWS's wording."""

    validation_error: type[Exception]
    service_name: str
    params: Any
    _get_action: Callable[[], str]  # moto's BaseResponse provides it

    def validated(self) -> dict[str, Any]:
        params = dict(self.params)
        message = validation_message(self.service_name, self._get_action(), params)
        if message is not None:
            raise self.validation_error(message)
        return params
