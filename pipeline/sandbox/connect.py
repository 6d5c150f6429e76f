"""Amazon Connect operations that moto lacks: claimed phone numbers, contact flows and their
associations, in moto's own style (a backend per account and region, a responses class, moto's
JSON error classes).

Instances themselves stay moto's (``moto.connect``): this backend looks them up there, so
``CreateInstance`` through the API is all a test needs to build a world.

AWS references:
https://docs.aws.amazon.com/connect/latest/APIReference/API_BatchGetFlowAssociation.html
https://docs.aws.amazon.com/connect/latest/APIReference/API_ListPhoneNumbersV2.html
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from moto.connect.models import Instance, connect_backends
from moto.core.base_backend import BackendDict, BaseBackend
from moto.core.exceptions import JsonRESTError
from moto.utilities.paginator import paginate

VOICE = "VOICE_PHONE_NUMBER"


class ResourceNotFoundException(JsonRESTError):
    code = 404

    def __init__(self, message: str) -> None:
        super().__init__("ResourceNotFoundException", message)


class InvalidParameterException(JsonRESTError):
    code = 400

    def __init__(self, message: str) -> None:
        super().__init__("InvalidParameterException", message)


class InvalidRequestException(JsonRESTError):
    code = 400

    def __init__(self, message: str) -> None:
        super().__init__("InvalidRequestException", message)


class DuplicateResourceException(JsonRESTError):
    code = 409

    def __init__(self, message: str) -> None:
        super().__init__("DuplicateResourceException", message)


class InvalidContactFlowException(JsonRESTError):
    code = 400

    def __init__(self, message: str) -> None:
        super().__init__("InvalidContactFlowException", message)


class ResourceInUseException(JsonRESTError):
    code = 409

    def __init__(self, message: str) -> None:
        super().__init__("ResourceInUseException", message)


# Enough of the numbering plan to give claimed numbers a plausible country and type.
_COUNTRY_PREFIXES = (
    ("+1", "US"), ("+44", "GB"), ("+49", "DE"), ("+33", "FR"), ("+61", "AU"),
    ("+81", "JP"), ("+65", "SG"), ("+27", "ZA"), ("+64", "NZ"), ("+353", "IE"),
)
_TOLL_FREE_US = ("+1800", "+1888", "+1877", "+1866", "+1855", "+1844", "+1833")


def _country_and_type(e164: str) -> tuple[str, str]:
    country = next(
        (code for prefix, code in sorted(_COUNTRY_PREFIXES, key=lambda p: -len(p[0]))
         if e164.startswith(prefix)),
        "US",
    )
    kind = "TOLL_FREE" if e164.startswith(_TOLL_FREE_US) else "DID"
    return country, kind


@dataclass(slots=True)
class PhoneNumber:
    id: str
    arn: str
    phone_number: str
    country_code: str
    number_type: str
    instance: Instance
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    flow_arn: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "PhoneNumberId": self.id,
            "PhoneNumberArn": self.arn,
            "PhoneNumber": self.phone_number,
            "PhoneNumberCountryCode": self.country_code,
            "PhoneNumberType": self.number_type,
            "TargetArn": self.instance.arn,
            "InstanceId": self.instance.id,
            "PhoneNumberDescription": self.description,
        }

    def association(self) -> dict[str, Any]:
        return {"ResourceId": self.arn, "FlowId": self.flow_arn, "ResourceType": VOICE}


@dataclass(slots=True)
class ContactFlow:
    id: str
    arn: str
    name: str
    type: str
    content: str
    status: str = "PUBLISHED"

    def summary(self) -> dict[str, Any]:
        return {"Id": self.id, "Arn": self.arn, "Name": self.name,
                "ContactFlowType": self.type, "ContactFlowState": "ACTIVE",
                "ContactFlowStatus": self.status}


PAGINATION_MODEL = {
    "list_phone_numbers": {
        "input_token": "next_token",
        "limit_key": "max_results",
        "limit_default": 100,
        "unique_attribute": "id",
    },
    "list_flow_associations": {
        "input_token": "next_token",
        "limit_key": "max_results",
        "limit_default": 100,
        "unique_attribute": "id",
    },
    "list_contact_flows": {
        "input_token": "next_token",
        "limit_key": "max_results",
        "limit_default": 100,
        "unique_attribute": "id",
    },
}


class ConnectSandboxBackend(BaseBackend):
    """Phone numbers, flows and associations of one account and region."""

    def __init__(self, region_name: str, account_id: str) -> None:
        super().__init__(region_name, account_id)
        self.numbers: dict[str, PhoneNumber] = {}
        # instance id -> number id -> number, in claim order (the listing order)
        self.numbers_by_instance: dict[str, dict[str, PhoneNumber]] = {}
        self.claimed: dict[str, PhoneNumber] = {}  # E.164 -> number
        self.flows: dict[str, dict[str, ContactFlow]] = {}  # instance id -> flow id -> flow

    # -- look-ups -------------------------------------------------------------------------

    def instance(self, instance_id: str) -> Instance:
        if instance_id.startswith("arn:"):
            instance_id = instance_id.rsplit("/", 1)[-1]
        instances = connect_backends[self.account_id][self.region_name].instances
        if instance_id not in instances:
            raise ResourceNotFoundException(f"Instance not found: {instance_id}")
        instance: Instance = instances[instance_id]
        return instance

    def _number_id(self, resource_id: str) -> str | None:
        """The phone number ID named by an ID, an ARN, or a legacy instance-scoped ARN;
        None for an ARN of another partition, region, account or service."""
        if not resource_id.startswith("arn:"):
            return resource_id
        parts = resource_id.split(":", 5)
        if len(parts) != 6 or parts[2] != "connect":
            return None
        if parts[3] != self.region_name or parts[4] != self.account_id:
            return None
        resource = parts[5]
        marker = "phone-number/"
        if marker not in resource:
            return None
        return resource.rsplit(marker, 1)[1]

    def number(self, resource_id: str) -> PhoneNumber:
        number_id = self._number_id(resource_id)
        number = self.numbers.get(number_id) if number_id else None
        if number is None:
            raise ResourceNotFoundException(f"Phone number not found: {resource_id}")
        return number

    def flow(self, instance: Instance, flow_id: str) -> ContactFlow:
        if flow_id.startswith("arn:"):
            flow_id = flow_id.rsplit("/", 1)[-1]
        flow = self.flows.get(instance.id, {}).get(flow_id)
        if flow is None:
            raise ResourceNotFoundException(f"Contact flow not found: {flow_id}")
        return flow

    # -- phone numbers ----------------------------------------------------------------------

    def claim_phone_number(
        self,
        *,
        phone_number: str,
        target_arn: str | None,
        instance_id: str | None,
        description: str = "",
        tags: dict[str, str] | None = None,
        number_id: str | None = None,
    ) -> PhoneNumber:
        if bool(target_arn) == bool(instance_id):
            raise InvalidParameterException("Provide exactly one of TargetArn and InstanceId")
        if target_arn and ":instance/" not in target_arn:
            raise ResourceNotFoundException(f"Target not found: {target_arn}")
        instance = self.instance(target_arn or instance_id or "")
        if target_arn and target_arn != instance.arn:
            raise ResourceNotFoundException(f"Target not found: {target_arn}")
        if phone_number in self.claimed:
            raise InvalidParameterException(f"Phone number {phone_number} is not available")
        number_id = number_id or str(uuid.uuid4())
        country, kind = _country_and_type(phone_number)
        number = PhoneNumber(
            id=number_id,
            arn=f"arn:aws:connect:{self.region_name}:{self.account_id}:phone-number/{number_id}",
            phone_number=phone_number,
            country_code=country,
            number_type=kind,
            instance=instance,
            description=description,
            tags=dict(tags or {}),
        )
        self.numbers[number.id] = number
        self.numbers_by_instance.setdefault(instance.id, {})[number.id] = number
        self.claimed[phone_number] = number
        return number

    def release_phone_number(self, number_id: str) -> None:
        number = self.number(number_id)
        del self.numbers[number.id]
        del self.numbers_by_instance[number.instance.id][number.id]
        del self.claimed[number.phone_number]

    @paginate(pagination_model=PAGINATION_MODEL)  # type: ignore[untyped-decorator]
    def list_phone_numbers(
        self,
        *,
        target_arn: str | None = None,
        instance_id: str | None = None,
        prefix: str | None = None,
        country_codes: list[str] | None = None,
        types: list[str] | None = None,
        max_results: int | None = None,
        next_token: str | None = None,
    ) -> list[PhoneNumber]:
        if target_arn and instance_id:
            raise InvalidParameterException("Provide at most one of TargetArn and InstanceId")
        if target_arn or instance_id:
            instance = self.instance(target_arn or instance_id or "")
            numbers = list(self.numbers_by_instance.get(instance.id, {}).values())
        else:
            numbers = list(self.numbers.values())
        if prefix:
            wanted = prefix if prefix.startswith("+") else "+" + prefix
            numbers = [n for n in numbers if n.phone_number.startswith(wanted)]
        if country_codes:
            numbers = [n for n in numbers if n.country_code in country_codes]
        if types:
            numbers = [n for n in numbers if n.number_type in types]
        return numbers

    # -- flows and associations ---------------------------------------------------------------

    def create_contact_flow(
        self,
        *,
        instance_id: str,
        name: str,
        flow_type: str,
        content: str,
        status: str | None = None,
        flow_id: str | None = None,
    ) -> ContactFlow:
        instance = self.instance(instance_id)
        flows = self.flows.setdefault(instance.id, {})
        # Names are unique per flow type in an instance; two types may share one.
        if any(flow.name == name and flow.type == flow_type for flow in flows.values()):
            raise DuplicateResourceException(f"A flow named {name!r} already exists")
        try:
            json.loads(content)
        except ValueError as exc:
            raise InvalidContactFlowException("The flow content is not valid JSON") from exc
        flow_id = flow_id or str(uuid.uuid4())
        flow = ContactFlow(
            id=flow_id,
            arn=f"{instance.arn}/contact-flow/{flow_id}",
            name=name,
            type=flow_type,
            content=content,
            status=status or "PUBLISHED",
        )
        flows[flow.id] = flow
        return flow

    @paginate(pagination_model=PAGINATION_MODEL)  # type: ignore[untyped-decorator]
    def list_contact_flows(
        self,
        *,
        instance_id: str,
        types: list[str] | None = None,
        max_results: int | None = None,
        next_token: str | None = None,
    ) -> list[ContactFlow]:
        instance = self.instance(instance_id)
        flows = list(self.flows.get(instance.id, {}).values())
        return [f for f in flows if not types or f.type in types]

    def associate_phone_number_contact_flow(
        self, *, number_id: str, instance_id: str, flow_id: str
    ) -> None:
        instance = self.instance(instance_id)
        number = self._number_in(instance, number_id)
        number.flow_arn = self.flow(instance, flow_id).arn

    def disassociate_phone_number_contact_flow(self, *, number_id: str, instance_id: str) -> None:
        instance = self.instance(instance_id)
        self._number_in(instance, number_id).flow_arn = None

    def _number_in(self, instance: Instance, resource_id: str) -> PhoneNumber:
        number = self.number(resource_id)
        if number.instance.id != instance.id:
            raise ResourceNotFoundException(
                f"Phone number {resource_id} is not claimed in instance {instance.id}"
            )
        return number

    def batch_get_flow_association(
        self, *, instance_id: str, resource_ids: list[str], resource_type: str | None
    ) -> list[PhoneNumber]:
        instance = self.instance(instance_id)
        # ResourceIds are ARNs in the AWS model (resourceArnListMaxLimit100); a bare ID is
        # refused as a malformed parameter.
        bare = [r for r in resource_ids if not r.startswith("arn:")]
        if bare:
            raise InvalidParameterException(
                f"ResourceIds must be phone number ARNs; {bare[0]} is not an ARN"
            )
        # The whole call fails when any requested resource is unknown in this instance.
        numbers = [self._number_in(instance, resource_id) for resource_id in resource_ids]
        if resource_type not in (None, VOICE):
            return []
        unique = {number.id: number for number in numbers}
        return [number for number in unique.values() if number.flow_arn]

    @paginate(pagination_model=PAGINATION_MODEL)  # type: ignore[untyped-decorator]
    def list_flow_associations(
        self,
        *,
        instance_id: str,
        resource_type: str | None = None,
        max_results: int | None = None,
        next_token: str | None = None,
    ) -> list[PhoneNumber]:
        instance = self.instance(instance_id)
        if resource_type not in (None, VOICE):
            return []
        return [n for n in self.numbers_by_instance.get(instance.id, {}).values() if n.flow_arn]


connect_sandbox_backends = BackendDict(ConnectSandboxBackend, "connect")


def flow_content_sha256(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()
