"""The reservation stage's rules: all lines or none, in request-log order, repeats ignored."""

from __future__ import annotations

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from cart_aggregator.reserve import (
    PRODUCT,
    REQUEST,
    Ledger,
    apply_records,
    decode_record,
    encode_product_record,
    encode_request,
)
from tests.support.fold_model import ReservationModel

PHONE = ("1", "Phone", "100.00", 3, 1)
CABLE = ("2", "Cable", "0.10", 10, 1)


def product(p: tuple | None, pid: str = "1", offset: int = 0) -> tuple:
    return PRODUCT, pid, p, offset


def request(cid: str, eid: str, *lines: tuple[str, int, str], offset: int = 0) -> tuple:
    return REQUEST, (cid, eid, offset, tuple(lines))


def run(ledger: Ledger, *records: tuple) -> list:
    answers, _ = apply_records(ledger, list(enumerate(records)))
    return answers


def test_the_first_requests_in_log_order_get_the_last_units() -> None:
    ledger = Ledger()
    answers = run(ledger, product(PHONE), *(request(f"c{i}", f"e{i}", ("1", 1, "100.00"))
                                            for i in range(5)))
    verdicts = [a[1][1][0] for a in answers]
    assert verdicts == ["RESERVED"] * 3 + ["OUT_OF_STOCK"] * 2
    assert answers[3][1][1] == ("OUT_OF_STOCK", ("1",))
    assert ledger.reserved == {"1": 3}


def test_all_lines_or_none() -> None:
    ledger = Ledger()
    [a] = run(ledger, product(PHONE), product(CABLE, "2"),
              request("c1", "e1", ("2", 5, "0.10"), ("1", 4, "100.00")))
    assert a == ("c1", (0, ("OUT_OF_STOCK", ("1",))))
    assert ledger.reserved == {}  # the cable was not reserved either
    [a] = run(ledger, request("c1", "e2", ("2", 5, "0.10"), ("1", 3, "100.00")))
    assert a[1][1][0] == "RESERVED" and ledger.reserved == {"2": 5, "1": 3}


def test_an_unknown_or_deleted_product_is_unavailable_and_reserves_nothing() -> None:
    ledger = Ledger()
    [a, b] = run(ledger, product(CABLE, "2"), product(None, "1", 5),
                 request("c1", "e1", ("1", 1, "100.00"), ("2", 1, "0.10")),
                 request("c2", "e2", ("9", 1, "1.00")))
    assert a[1][1] == ("PRODUCT_UNAVAILABLE", ("1",))
    assert b[1][1] == ("PRODUCT_UNAVAILABLE", ("9",))
    assert ledger.reserved == {}


def test_the_order_is_priced_at_the_catalog_in_force() -> None:
    ledger = Ledger()
    [a] = run(ledger, product(PHONE), product(("1", "Phone 2", "120.00", 3, 1), offset=1),
              request("c1", "e1", ("1", 2, "100.00")))
    assert a == ("c1", (0, ("RESERVED", (("1", "Phone 2", 2, "120.00"),))))


def test_the_latest_forwarded_catalog_record_is_in_force() -> None:
    # A tombstone from a producer with another partitioner sits at a lower offset of another
    # partition than the product's record: it still deletes the product.
    ledger = Ledger()
    [a] = run(ledger, product(PHONE, offset=40), product(None, offset=2),
              request("c1", "e1", ("1", 1, "100.00")))
    assert a[1][1] == ("PRODUCT_UNAVAILABLE", ("1",))


def test_a_repeated_request_is_ignored() -> None:
    ledger = Ledger()
    first = run(ledger, product(PHONE), request("c1", "e1", ("1", 2, "100.00")))
    again = run(ledger, request("c1", "e1", ("1", 2, "100.00")))
    assert len(first) == 1 and again == [] and ledger.reserved == {"1": 2}


def test_a_retry_the_fold_no_longer_recognises_is_a_checkout_of_its_own() -> None:
    # Same eventId, another event (offset): the fold waits for its answer, so it gets one.
    ledger = Ledger()
    run(ledger, product(PHONE), request("c1", "e1", ("1", 2, "100.00"), offset=4))
    [a] = run(ledger, request("c1", "e1", ("1", 2, "100.00"), offset=90))
    assert a == ("c1", (90, ("OUT_OF_STOCK", ("1",))))


def test_a_resume_re_reads_the_same_records_and_decides_the_same() -> None:
    records = [product(PHONE), *(request(f"c{i % 4}", f"e{i}", ("1", 1, "100.00"))
                                 for i in range(6))]
    ledger = Ledger()
    run(ledger, *records[:2])
    saved = pickle.loads(pickle.dumps(ledger.saved()))
    once = run(ledger, *records[2:])
    # kill -9 here: the stage restarts from the snapshot, re-reads the same records, and the
    # fold's re-emitted requests (repeats) come after them.
    resumed = Ledger.from_saved(saved)
    again = run(resumed, *records[2:], *records[1:])
    assert again == once and resumed.reserved == ledger.reserved == {"1": 3}


def test_records_round_trip() -> None:
    req = ("c1", "6b0f0f4e-0000-4000-8000-000000000000", 7, (("1", 2, "100.00"),))
    assert decode_record(encode_request(req)[1]) == (REQUEST, req)
    assert decode_record(encode_product_record("1", PHONE, 3)[1]) == (PRODUCT, "1", PHONE, 3)
    assert decode_record(encode_product_record("1", None, 4)[1]) == (PRODUCT, "1", None, 4)


record_strategy = st.one_of(
    st.builds(lambda pid, stock, price, off: product(
        (pid, f"P{pid}", price, stock, 1), pid, off),
        st.sampled_from("123"), st.integers(0, 6), st.sampled_from(["1.00", "2.50"]),
        st.integers(0, 20)),
    st.builds(lambda pid, off: product(None, pid, off), st.sampled_from("123"),
              st.integers(0, 20)),
    st.builds(lambda c, e, lines: request(c, e, *lines),
              st.sampled_from(["c1", "c2", "c3"]), st.sampled_from([f"e{i}" for i in range(8)]),
              st.lists(st.tuples(st.sampled_from("1234"), st.integers(1, 3), st.just("1.00")),
                       min_size=1, max_size=3, unique_by=lambda x: x[0])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(record_strategy, max_size=40))
def test_the_stage_decides_as_the_readable_model(records: list) -> None:
    model = ReservationModel()
    for r in records:
        model.feed(r)
    ledger = Ledger()
    answers = run(ledger, *records)
    got = {}
    for cid, (_, a) in answers:
        got.setdefault(cid, []).append(a)
    want: dict = {}
    seen = set()
    for r in records:
        if r[0] == REQUEST and (r[1][0], r[1][1]) not in seen:
            seen.add((r[1][0], r[1][1]))
            want.setdefault(r[1][0], []).append(model.answers[r[1][0], r[1][1]])
    assert got == want
    assert {k: v for k, v in ledger.reserved.items() if v} == {
        k: v for k, v in model.reserved.items() if v}
