"""Normalisation of flow-associations input: forms, case, scope, reasons."""

from __future__ import annotations

import polars as pl
from connect_bulk.jobs.flow_associations import FlowAssociations

A = "11111111-aaaa-4aaa-8aaa-111111111111"
N = "22222222-bbbb-4bbb-8bbb-222222222222"
A_ARN = f"arn:aws:connect:eu-west-2:111122223333:instance/{A}"
N_ARN = f"arn:aws:connect:eu-west-2:111122223333:phone-number/{N}"
LEGACY = f"arn:aws:connect:eu-west-2:111122223333:instance/{A}/phone-number/{N}"


def _normalize(rows: list[tuple[str | None, str | None]]) -> tuple[list[dict], list[dict]]:
    frame = pl.DataFrame(
        {"instance_id": [r[0] for r in rows], "phone_number": [r[1] for r in rows]},
        schema={"instance_id": pl.String, "phone_number": pl.String},
    ).with_row_index("input_row", offset=1).with_columns(pl.col("input_row").cast(pl.Int64))
    result = FlowAssociations().normalize(frame.lazy())
    return result.items.collect().to_dicts(), result.rejects.collect().to_dicts()


def test_ids_and_arns_of_one_number_are_one_key() -> None:
    items, rejects = _normalize([(A, N), (A_ARN, N_ARN), (A.upper(), LEGACY), (A, N.upper())])
    assert rejects == []
    assert {(i["instance_id"], i["item_key"]) for i in items} == {(A, N)}


def test_arns_carry_region_and_account_and_bare_ids_leave_them_open() -> None:
    items, _ = _normalize([(A_ARN, N), (A, N_ARN), (A, N)])
    assert [(i["region"], i["account_id"]) for i in items] == [
        ("eu-west-2", "111122223333"), ("eu-west-2", "111122223333"), (None, None)]


def test_reasons_tell_the_user_what_to_fix() -> None:
    other_region = N_ARN.replace("eu-west-2", "us-east-1")
    other_instance = LEGACY.replace(f"instance/{A}", "instance/" + "3" * 8 + A[8:])
    _, rejects = _normalize([
        (None, N), ("i-123", N), (A, None), (A, "+0 20 7946 0000"), (A, "12345x"),
        (A_ARN, other_region), (A, other_instance),
    ])
    reasons = [r["reason"] for r in rejects]
    assert reasons == [
        "instance_id is empty",
        "instance_id 'i-123' is not an instance ID (UUID) or instance ARN",
        "phone_number is empty",
        "phone_number '+0 20 7946 0000' is not a valid E.164 number (+ country code and number, "
        "at most 15 digits)",
        "phone_number '12345x' is not a phone number ID (UUID) or phone number ARN",
        "phone number ARN is in us-east-1/111122223333 but the instance is in "
        "eu-west-2/111122223333",
        f"phone number ARN names instance 33333333{A[8:]}, not {A}",
    ]
    assert [r["input_row"] for r in rejects] == [1, 2, 3, 4, 5, 6, 7]


def test_e164_numbers_in_any_punctuation_are_one_key() -> None:
    items, rejects = _normalize([(A, "+44 20 7946 0000"), (A, "+44 (20) 7946-0000"),
                                 (A, "+442079460000")])
    assert rejects == []
    # Keyed by the E.164 form until the instance's listing names the number's ID.
    assert {(i["item_key"], i["phone_number"]) for i in items} == {
        ("+442079460000", "+442079460000")}
