"""Several held-out runs on one project read as one set × method matrix, and only when they judged the same sets
against the same references."""

import pytest

from hyperforget.base.errors import DataError
from hyperforget.studies.set_matrix import markdown, merge

REF = {"delta": 0.0, "retained_acc": 0.99, "forget_acc": 0.0, "passed": None, "time_s": None}


def row(passed, delta, time_s, failed=()):
    return {"passed": passed, "delta": delta, "time_s": time_s, "failed": list(failed)}


def run(rows_by_set, sets=([1, 2], [3, 4, 5]), ref=REF):
    names = list(rows_by_set[0])
    return {"command": "python bench/set_erasure.py …", "rows": names, "seconds": 1.0,
            "sets": [{"classes": list(c), "rows": {"reference": dict(ref), **rs}}
                     for c, rs in zip(sets, rows_by_set, strict=True)]}


def two_runs():
    a = run([{"dihyfo1": row(True, -0.01, 1.0), "retrain": row(True, 0.0, 50.0)},
             {"dihyfo1": row(False, -0.02, 2.0, ["probe_forget_logit"]), "retrain": row(True, -0.001, 60.0)}])
    b = run([{"salun": row(False, 0.0, 30.0, ["probe_forget_logit", "lira_auc"]), "retrain": row(True, 0.0, 55.0)},
             {"salun": row(False, 0.001, 40.0, ["probe_forget_logit"]), "retrain": row(False, 0.0, 56.0, ["mia"])}])
    return a, b


def test_every_method_of_every_run_is_a_column_and_a_shared_row_is_kept_per_run():
    merged = merge(list(two_runs()), ["main", "salun"])
    assert [c["label"] for c in merged["columns"]] == ["dihyfo1", "retrain [main]", "salun", "retrain [salun]"]
    assert [s["classes"] for s in merged["sets"]] == [[1, 2], [3, 4, 5]]
    dihyfo = merged["summary"]["dihyfo1"]
    assert dihyfo["passed"] == 1 and dihyfo["delta"] == pytest.approx(-0.015)
    assert (dihyfo["worst_delta"], dihyfo["worst_set"]) == (-0.02, [3, 4, 5])
    assert dihyfo["time_s"] == 1.5 and dihyfo["failed_checks"] == {"probe_forget_logit": 1}
    assert merged["summary"]["salun"]["failed_checks"] == {"probe_forget_logit": 2, "lira_auc": 1}
    # the two runs' own retrains disagree on the second set: said, not hidden
    assert merged["repeats"]["retrain"] == {"labels": ["retrain [main]", "retrain [salun]"], "same": 1,
                                            "differ": [[3, 4, 5]]}


def test_the_table_marks_each_cell_and_names_the_failed_checks():
    text = markdown(merge(list(two_runs()), ["main", "salun"]))
    lines = text.splitlines()
    assert lines[0] == "| set | dihyfo1 | retrain [main] | salun | retrain [salun] |"
    assert lines[2] == "| {1, 2} | ✓ | ✓ | ✗ probe-conf LiRA↑ | ✓ |"
    assert lines[3] == "| {3, 4, 5} | ✗ probe-conf | ✓ | ✗ probe-conf | ✗ MIA |"
    assert "| dihyfo1 | main | 1/2 | -1.50 points | -2.00 {3, 4, 5} | 1.50 | probe-conf 1 |" in lines
    assert "`retrain` ran in 2 runs: the same verdict on 1 of 2 sets; differs on {3, 4, 5}" in text


def test_runs_on_other_sets_or_against_other_references_are_refused_with_the_run_and_set():
    a, b = two_runs()
    other_sets = run([{"salun": row(True, 0.0, 1.0)}, {"salun": row(True, 0.0, 1.0)}], sets=([1, 2], [6, 7]))
    with pytest.raises(DataError, match=r"other judged other sets than main .*set 2: \[6, 7\] against \[3, 4, 5\]"):
        merge([a, other_sets], ["main", "other"])
    retrained = run([{"salun": row(True, 0.0, 1.0)}, {"salun": row(True, 0.0, 1.0)}], ref={**REF, "retained_acc": 0.98})
    with pytest.raises(DataError, match=r"set \[1, 2\]: again's reference differs from main's .*0\.98 against 0\.99"):
        merge([a, retrained], ["main", "again"])
    with pytest.raises(DataError, match="one name per run"):
        merge([a, b], ["main"])


def test_a_file_that_is_no_held_out_run_is_refused_with_what_to_give():
    a, _ = two_runs()
    unfinished = run([{"salun": row(True, 0.0, 1.0)}, {"salun": row(True, 0.0, 1.0)}])
    del unfinished["sets"][1]["rows"]["salun"]
    for bad in ({"summary": {}}, [1, 2], unfinished):
        with pytest.raises(DataError, match=r"bad\.json is not a held-out run .* bench/set_erasure\.py --json wrote"):
            merge([a, bad], ["main", "bad.json"])
