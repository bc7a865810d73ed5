"""Report aggregation: the tidy table behind the figures."""
import pandas as pd

from lifelong.report import tidy


def test_tidy_unedited_rows_are_the_pre_edit_scores():
    results = pd.DataFrame([{"model": "m", "dataset": "d", "editor": e, "n_edits": 1, "reliability": 0.9,
                             "generalization": 0.8, "locality": 0.7, "pre_reliability": 0.1,
                             "pre_generalization": 0.2, "pre_locality": 1.0} for e in ("ft", "wise")])
    long = tidy(results)
    unedited = long[long.editor == "unedited"].set_index("metric").value
    assert unedited.to_dict() == {"reliability": 0.1, "generalization": 0.2, "locality": 1.0}
    assert len(long) == 3 * 3
