"""The input domain of a circuit: building it, checking rows against it, recording it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from circuits import CompileError, CompileOptions, compile_model
from circuits.demo import demo_files
from circuits.domain import DomainError, InputDomain, explicit, from_calibration, load_ranges_file, parse_range, sample


def test_calibration_domain_is_widened_by_the_margin_of_each_span():
    rows = np.array([[0.0, 5.0, 2.0], [1.0, 5.0, 4.0]])
    ranges = from_calibration(["x"], [rows], margin=0.1)
    np.testing.assert_allclose(ranges["x"].low, [-0.1, 4.5, 1.8])  # a constant feature widens by 10% of |v|
    np.testing.assert_allclose(ranges["x"].high, [1.1, 5.5, 4.2])
    assert ranges["x"].source == "calibration" and ranges["x"].margin == 0.1


def test_violation_names_input_feature_row_value_and_domain():
    domain = InputDomain("demo-mlp", from_calibration(["x"], [np.array([[-1.0] * 4, [1.0] * 4])], 0.2))
    assert domain.violation("x", np.zeros((3, 4))) is None
    rows = np.zeros((2, 2, 2))
    rows[1, 1, 0] = 10.0
    found = domain.violation("x", rows)
    assert (found.input, found.row, found.feature, found.value) == ("x", 1, 2, 10.0)
    assert (found.low, found.high) == pytest.approx((-1.4, 1.4))
    assert found.message().startswith("input 'x' feature 2 of row 1 is 10, outside the proven domain [-1.4, 1.4] "
                                      "of model demo-mlp")
    nan = np.zeros((1, 4))
    nan[0, 3] = np.nan
    assert domain.violation("x", nan).feature == 3  # NaN is outside every domain
    with pytest.raises(DomainError, match="no input named"):
        domain.violation("y", nan)


def test_manifest_round_trip():
    domain = InputDomain("m", explicit(["a", "b"], [2, 1], {"a": ([-1, -2], [1, 2]), "b": (0, 3)}))
    document = {"name": "m", "input_domain": json.loads(json.dumps(domain.to_manifest()))}
    again = InputDomain.from_manifest(document)
    assert again.to_manifest() == domain.to_manifest()
    assert document["input_domain"]["b"] == {"low": [0.0], "high": [3.0], "source": "explicit", "margin": 0.0}
    with pytest.raises(DomainError, match="recompile"):
        InputDomain.from_manifest({"name": "old"})


def test_explicit_ranges_are_checked():
    with pytest.raises(DomainError, match="low .* > high"):
        explicit(["x"], [2], {"x": ([0, 2], [1, 1])})
    with pytest.raises(DomainError, match="one or 3"):
        explicit(["x"], [3], {"x": ([0, 0], [1, 1])})
    with pytest.raises(DomainError, match="unknown input"):
        explicit(["x"], [1], {"x": (0, 1), "z": (0, 1)})
    assert parse_range("-1.5:2") == (-1.5, 2.0)
    for bad in ("1", "a:b", "2:1", "nan:1"):
        with pytest.raises(DomainError):
            parse_range(bad)


def test_ranges_files_json_and_npy(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"low": [0, 1], "high": [2, 3]}))
    assert load_ranges_file(tmp_path / "r.json", ["x"]) == {"x": ([0, 1], [2, 3])}
    np.save(tmp_path / "r.npy", np.array([[[0.0, 1.0]], [[2.0, 3.0]]]))
    low, high = load_ranges_file(tmp_path / "r.npy", ["x"])["x"]
    assert low.tolist() == [[0.0, 1.0]] and high.tolist() == [[2.0, 3.0]]
    np.save(tmp_path / "bad.npy", np.zeros((3, 2)))
    with pytest.raises(DomainError, match=r"\[2, \*row_shape\]"):
        load_ranges_file(tmp_path / "bad.npy", ["x"])


def test_sample_holds_all_corners_of_a_small_box_and_stays_inside():
    ranges = explicit(["x"], [3], {"x": ([-1, 0, 5], [1, 2, 6])})
    points = sample(ranges, [[3]], corners=32, random=10)[0]
    corners = {tuple(p) for p in points[1:9]}
    assert len(corners) == 8 and (-1.0, 0.0, 5.0) in corners and (1.0, 2.0, 6.0) in corners
    assert (points >= ranges["x"].low).all() and (points <= ranges["x"].high).all()
    wide = explicit(["x"], [40], {"x": (-1, 1)})
    assert len(sample(wide, [[40]], corners=16, random=4)[0]) == 1 + 16 + 4  # a bounded choice of 2**40 corners


def test_demo_packages_record_their_domain_and_worst_error(demo_packages):
    for package in demo_packages.values():
        (name,) = package.manifest["input_domain"]
        entry = package.manifest["input_domain"][name]
        # the demos' documented input range, explicit: the whole box their rows are drawn from
        assert entry["source"] == "explicit" and set(entry["low"]) == {-1.0} and set(entry["high"]) == {1.0}
        check = package.manifest["domain_check"]
        assert check["points"] == 65 and check["max_abs_error"] <= check["limit"]
        assert package.tolerance >= 2 * check["max_abs_error"]
        assert package.input_domain.violation(name, np.full((1, len(entry["low"])), 10.0)) is not None


def test_compile_records_an_explicit_domain_and_fails_one_it_cannot_hold(tmp_path):
    model, calibration = demo_files("demo-mlp")
    package = compile_model(model, "mlp-wide", CompileOptions(input_range=(-8.0, 8.0)), calibration=calibration,
                            out_dir=tmp_path / "wide")
    entry = package.manifest["input_domain"]["features"]
    assert entry == {"low": [-8.0] * 16, "high": [8.0] * 16, "source": "explicit", "margin": 0.0}
    assert package.manifest["domain_check"]["max_abs_error"] <= package.tolerance / 2
    with pytest.raises(CompileError, match="does not hold the input domain"):
        compile_model(model, "mlp-huge", CompileOptions(input_range=(-30000.0, 30000.0)), calibration=calibration,
                      out_dir=tmp_path / "huge")
    assert not (tmp_path / "huge").exists()
