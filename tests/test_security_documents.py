"""Proof documents are checked against their circuit's shape before anything is allocated:
real packages and real proofs, no server."""

from __future__ import annotations

import json
import time

import pytest

from serve.errors import InvalidArgument, PayloadTooLarge, ServeError
from serve.verifier.documents import FIELD_MODULUS, MAX_DOCUMENT_BYTES, check_raw_size, parse_proof, proof_shape


@pytest.fixture(scope="module")
def shape(mlp_package):
    return proof_shape(mlp_package)


def document(source, **ezkl) -> dict:
    doc = json.loads(source.to_json())
    doc["ezkl"].update(ezkl)
    return doc


def fastest_refusal(raw: bytes, package, shape, error=InvalidArgument, match: str = "", tries: int = 3) -> float:
    """The quickest of a few refusals: the work itself, without a loaded machine's preemptions."""
    timings = []
    for _ in range(tries):
        started = time.perf_counter()
        with pytest.raises(error, match=match):
            parse_proof(raw, package, shape)
        timings.append(time.perf_counter() - started)
    return min(timings)


def encode(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def test_shape_is_read_from_the_verifier_contract_and_matches_real_proofs(mlp_package, mlp_proof, cnn_package,
                                                                          cnn_proof, shape):
    assert shape.exact and shape.proof_bytes == len(mlp_proof.proof_bytes)
    assert shape.num_instances == len(mlp_proof.instances) == 16 + 2
    cnn = proof_shape(cnn_package)
    assert cnn.num_instances == len(cnn_proof.instances) == 64 + 3 and cnn.proof_bytes == len(cnn_proof.proof_bytes)
    parsed = parse_proof(mlp_proof.to_json().encode(), mlp_package, shape)
    assert parsed.proof_hash == mlp_proof.proof_hash and parsed.instances == mlp_proof.instances


def test_the_200_mb_document_is_refused_in_well_under_10_ms(mlp_package, mlp_proof, shape):
    raw = b'{"model_id":"0x","ezkl":{"proof":200000000,"instances":[]}}'
    assert len(raw) <= 60
    assert fastest_refusal(raw, mlp_package, shape, match="list of bytes") < 0.010


@pytest.mark.parametrize("case, match", [
    ("not_json", "not JSON"),
    ("not_object", "no `ezkl` object"),
    ("deep", "nests deeper than 32 levels"),  # measured first: parsing it could overflow the C stack
    ("proof_string", "list of bytes"),
    ("proof_long", "proofs of demo-mlp have exactly"),
    ("proof_short", "proofs of demo-mlp have exactly"),
    ("byte_256", r"ezkl.proof\[5\] is 256"),
    ("byte_bool", r"ezkl.proof\[0\] is True"),
    ("byte_float", r"ezkl.proof\[1\] is 1.5"),
    ("instances_missing", "list of lists"),
    ("instances_count", "holds 17 field elements"),
    ("felt_short", "not a field element"),
    ("felt_0x", "not a field element"),
    ("felt_modulus", "BN254 field modulus"),
    ("rows_big", "rows must be an int"),
    ("rows_inf", "not JSON|rows must be an int"),
    ("meta_list", "meta must be an object"),
])
def test_malformed_documents_are_invalid_argument_fast(mlp_package, mlp_proof, shape, case, match):
    good = document(mlp_proof)
    proof, instances = good["ezkl"]["proof"], good["ezkl"]["instances"]
    modulus_le = FIELD_MODULUS.to_bytes(32, "little").hex()
    raw = {
        "not_json": lambda: b"{not json",
        "not_object": lambda: b"[1, 2, 3]",
        "deep": lambda: b"[" * 30000 + b"]" * 30000,
        "proof_string": lambda: encode(document(mlp_proof, proof="00" * 10)),
        "proof_long": lambda: encode(document(mlp_proof, proof=proof + [0])),
        "proof_short": lambda: encode(document(mlp_proof, proof=proof[:-1])),
        "byte_256": lambda: encode(document(mlp_proof, proof=proof[:5] + [256] + proof[6:])),
        "byte_bool": lambda: encode(document(mlp_proof, proof=[True] + proof[1:])),
        "byte_float": lambda: encode(document(mlp_proof, proof=proof[:1] + [1.5] + proof[2:])),
        "instances_missing": lambda: encode(document(mlp_proof, instances=None)),
        "instances_count": lambda: encode(document(mlp_proof, instances=[instances[0][:-1]])),
        "felt_short": lambda: encode(document(mlp_proof, instances=[["ab"] + instances[0][1:]])),
        "felt_0x": lambda: encode(document(mlp_proof, instances=[["0x" + instances[0][0][2:]] + instances[0][1:]])),
        "felt_modulus": lambda: encode(document(mlp_proof, instances=[[modulus_le] + instances[0][1:]])),
        "rows_big": lambda: encode({**good, "rows": 2}),
        "rows_inf": lambda: encode(good).replace(b'"rows": 1', b'"rows": 1e999'),
        "meta_list": lambda: encode({**good, "meta": [1]}),
    }[case]()
    assert fastest_refusal(raw, mlp_package, shape, match=match) < 0.010, case


def test_raw_size_is_bounded_first(mlp_package, shape):
    with pytest.raises(InvalidArgument, match="empty"):
        check_raw_size(b"")
    with pytest.raises(PayloadTooLarge, match="over the verifier's"):
        check_raw_size(b" " * (MAX_DOCUMENT_BYTES + 1))
    padded = b" " * shape.max_document_bytes + b"{}"  # under the global bound, over this circuit's
    with pytest.raises(PayloadTooLarge, match="documents for demo-mlp are at most"):
        parse_proof(padded, mlp_package, shape)
    assert issubclass(PayloadTooLarge, ServeError)


def test_any_json_document_is_a_clean_refusal_never_a_crash(mlp_package, mlp_proof, shape):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers(-2**300, 2**300) | st.floats() | st.text(max_size=80)
    values = st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
        max_leaves=40)
    good = json.loads(mlp_proof.to_json())
    field_names = st.sampled_from(["model_id", "rows", "meta", "ezkl", "ezkl.proof", "ezkl.instances"])

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(field_names, values)
    def check(name: str, value) -> None:
        doc = json.loads(json.dumps(good))
        if name.startswith("ezkl."):
            doc["ezkl"][name[5:]] = value
        else:
            doc[name] = value
        started = time.perf_counter()
        try:
            parse_proof(json.dumps(doc).encode(), mlp_package, shape)
        except ServeError as error:
            assert isinstance(error, (InvalidArgument, PayloadTooLarge))
        assert time.perf_counter() - started < 0.1  # generous: one try, under hypothesis, on a shared machine

    check()
