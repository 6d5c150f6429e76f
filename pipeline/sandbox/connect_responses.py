"""The HTTP side of the Connect operations ``connect.py`` adds to moto: parameters parsed and
validated against the AWS model, answers in AWS's JSON, and the URL paths that route to them."""

from __future__ import annotations

import json
from typing import Any

from moto.core.responses import BaseResponse

from .connect import (
    ConnectSandboxBackend,
    InvalidParameterException,
    connect_sandbox_backends,
    flow_content_sha256,
)
from .validation import ValidatingResponse


class ConnectSandboxResponse(ValidatingResponse, BaseResponse):
    """Serves the operations above; moto's ``ConnectResponse`` keeps serving the rest."""

    validation_error = InvalidParameterException

    def __init__(self) -> None:
        super().__init__(service_name="connect")
        self.automated_parameter_parsing = True

    @property
    def backend(self) -> ConnectSandboxBackend:
        backend: ConnectSandboxBackend = connect_sandbox_backends[self.current_account][
            self.region
        ]
        return backend

    def claim_phone_number(self) -> str:
        params = self.validated()
        number = self.backend.claim_phone_number(
            phone_number=params["PhoneNumber"],
            target_arn=params.get("TargetArn"),
            instance_id=params.get("InstanceId"),
            description=params.get("PhoneNumberDescription", ""),
            tags=params.get("Tags"),
        )
        return json.dumps({"PhoneNumberId": number.id, "PhoneNumberArn": number.arn})

    def describe_phone_number(self) -> str:
        params = self.validated()
        number = self.backend.number(params["PhoneNumberId"])
        summary = number.summary() | {
            "Tags": number.tags,
            "PhoneNumberStatus": {"Status": "CLAIMED"},
        }
        return json.dumps({"ClaimedPhoneNumberSummary": summary})

    def release_phone_number(self) -> str:
        params = self.validated()
        self.backend.release_phone_number(params["PhoneNumberId"])
        return "{}"

    def list_phone_numbers_v2(self) -> str:
        params = self.validated()
        numbers, token = self.backend.list_phone_numbers(
            target_arn=params.get("TargetArn"),
            instance_id=params.get("InstanceId"),
            prefix=params.get("PhoneNumberPrefix"),
            country_codes=params.get("PhoneNumberCountryCodes"),
            types=params.get("PhoneNumberTypes"),
            max_results=params.get("MaxResults"),
            next_token=params.get("NextToken"),
        )
        return _page("ListPhoneNumbersSummaryList", [n.summary() for n in numbers], token)

    def create_contact_flow(self) -> str:
        params = self.validated()
        flow = self.backend.create_contact_flow(
            instance_id=params["InstanceId"],
            name=params["Name"],
            flow_type=params["Type"],
            content=params["Content"],
            status=params.get("Status"),
        )
        return json.dumps({
            "ContactFlowId": flow.id,
            "ContactFlowArn": flow.arn,
            "FlowContentSha256": flow_content_sha256(flow.content),
        })

    def list_contact_flows(self) -> str:
        params = self.validated()
        flows, token = self.backend.list_contact_flows(
            instance_id=params["InstanceId"],
            types=params.get("ContactFlowTypes"),
            max_results=params.get("MaxResults"),
            next_token=params.get("NextToken"),
        )
        return _page("ContactFlowSummaryList", [f.summary() for f in flows], token)

    def associate_phone_number_contact_flow(self) -> str:
        params = self.validated()
        self.backend.associate_phone_number_contact_flow(
            number_id=params["PhoneNumberId"],
            instance_id=params["InstanceId"],
            flow_id=params["ContactFlowId"],
        )
        return "{}"

    def disassociate_phone_number_contact_flow(self) -> str:
        params = self.validated()
        self.backend.disassociate_phone_number_contact_flow(
            number_id=params["PhoneNumberId"], instance_id=params["InstanceId"]
        )
        return "{}"

    def batch_get_flow_association(self) -> str:
        params = self.validated()
        numbers = self.backend.batch_get_flow_association(
            instance_id=params["InstanceId"],
            resource_ids=params["ResourceIds"],
            resource_type=params.get("ResourceType"),
        )
        return json.dumps({"FlowAssociationSummaryList": [n.association() for n in numbers]})

    def list_flow_associations(self) -> str:
        params = self.validated()
        numbers, token = self.backend.list_flow_associations(
            instance_id=params["InstanceId"],
            resource_type=params.get("ResourceType"),
            max_results=params.get("MaxResults"),
            next_token=params.get("NextToken"),
        )
        return _page("FlowAssociationSummaryList", [n.association() for n in numbers], token)


def _page(key: str, entries: list[dict[str, Any]], token: str | None) -> str:
    """One page of a listing, as AWS answers it: the entries, and the token of the next."""
    return json.dumps({key: entries} | ({"NextToken": token} if token else {}))


# Paths are moto's url_paths syntax ("{0}" is the service's URL base).
URL_PATHS = {
    "{0}/phone-number/claim$": ConnectSandboxResponse.dispatch,
    "{0}/phone-number/list$": ConnectSandboxResponse.dispatch,
    "{0}/phone-number/(?P<PhoneNumberId>[^/]+)$": ConnectSandboxResponse.dispatch,
    "{0}/phone-number/(?P<PhoneNumberId>[^/]+)/contact-flow$": ConnectSandboxResponse.dispatch,
    "{0}/contact-flows/(?P<InstanceId>.+)$": ConnectSandboxResponse.dispatch,
    "{0}/contact-flows-summary/(?P<InstanceId>[^/]+)$": ConnectSandboxResponse.dispatch,
    "{0}/flow-associations-batch/(?P<InstanceId>.+)$": ConnectSandboxResponse.dispatch,
    "{0}/flow-associations-summary/(?P<InstanceId>.+)$": ConnectSandboxResponse.dispatch,
}
