"""Agreement figures (grader.quality.metrics): equal to scikit-learn/SciPy, undefined figures
said so, grids, and bootstrap intervals that are seeded and computed the same way as the point
figures."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import cohen_kappa_score, confusion_matrix, mean_absolute_error

from grader.prompting.rubric import Criterion, Level, Rubric
from grader.quality import metrics
from grader.quality.metrics import _qwk_rows, compare, positions, qwk, score_grid, total_grid

AI = [0, 1, 2, 2, 3, 4, 4, 1, 0, 3, 2, 4]
HUMAN = [0, 1, 1, 2, 4, 4, 3, 2, 0, 3, 2, 4]
GRID = (0.0, 1.0, 2.0, 3.0, 4.0)


def test_figures_equal_scikit_learn_and_scipy() -> None:
    f = compare(AI, HUMAN, GRID, 4, resamples=200)
    assert f.qwk == pytest.approx(cohen_kappa_score(AI, HUMAN, weights="quadratic"))
    assert f.mae == pytest.approx(mean_absolute_error(HUMAN, AI))
    assert f.mae_share == pytest.approx(mean_absolute_error(HUMAN, AI) / 4)
    assert f.pearson == pytest.approx(stats.pearsonr(AI, HUMAN).statistic)
    assert f.spearman == pytest.approx(stats.spearmanr(AI, HUMAN).statistic)
    assert f.exact == pytest.approx(np.mean(np.array(AI) == np.array(HUMAN)))
    assert f.adjacent == 1.0
    assert f.bias == pytest.approx(np.mean(np.array(AI) - np.array(HUMAN)))
    assert f.baseline_mae == pytest.approx(np.mean(np.abs(np.array(HUMAN) - np.mean(HUMAN))))
    assert f.confusion == confusion_matrix(HUMAN, AI, labels=GRID).tolist()
    assert f.notes == []
    for name in metrics.FIGURES:
        lo, hi = f.ci[name]
        assert lo <= hi
        if name in ("mae", "bias", "exact"):  # means: the point lies inside its interval
            assert lo <= f.value(name) <= hi


def test_every_score_equal_is_undefined_not_faked() -> None:
    f = compare([2, 2, 2], [2, 2, 2], GRID, 4)
    assert f.qwk is None and f.pearson is None and f.spearman is None
    assert f.ci["qwk"] is None and f.ci["pearson"] is None
    assert f.mae == 0 and f.exact == 1 and f.bias == 0
    assert any("QWK undefined: every score is 2" in n for n in f.notes)
    assert any("correlations undefined" in n for n in f.notes)
    # sklearn agrees that there is nothing to compute (0/0)
    with pytest.warns(Warning):
        assert np.isnan(cohen_kappa_score([2, 2, 2], [2, 2, 2], weights="quadratic",
                                          labels=[0, 1, 2, 3, 4]))
    # one side constant: kappa is defined (0), the correlation is not
    g = compare([1, 2, 3], [2, 2, 2], GRID, 4)
    assert g.qwk == pytest.approx(0.0) and g.pearson is None
    assert "every human score is 2" in " ".join(g.notes)
    assert compare([], [], GRID, 4).n == 0


def test_bootstrap_qwk_is_the_same_number_as_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 5, 40)
    b = np.clip(a + rng.integers(-2, 3, 40), 0, 4)
    idx = rng.integers(0, 40, size=(60, 40))
    fast = _qwk_rows(a[idx].astype(float), b[idx].astype(float))
    slow = [cohen_kappa_score(a[i], b[i], weights="quadratic", labels=list(range(5)))
            for i in idx]
    assert fast == pytest.approx(slow)


def test_bootstrap_is_seeded() -> None:
    one = compare(AI, HUMAN, GRID, 4, resamples=300, seed=1).ci
    assert compare(AI, HUMAN, GRID, 4, resamples=300, seed=1).ci == one
    assert compare(AI, HUMAN, GRID, 4, resamples=300, seed=2).ci != one


def test_grids_and_positions() -> None:
    assert score_grid(Criterion(id="c", title="C", max_points=2)) == (0, 0.5, 1, 1.5, 2)
    assert score_grid(Criterion(id="c", title="C", max_points=1.25))[-1] == 1.25
    lv = Criterion(id="c", title="C", max_points=4, levels=(
        Level(points=0, descriptor="a"), Level(points=1, descriptor="b"),
        Level(points=4, descriptor="c")))
    assert score_grid(lv) == (0, 1, 4)
    r = Rubric(title="t", criteria=(lv, Criterion(id="d", title="D", max_points=1)))
    assert total_grid(r) == (0, 0.5, 1, 1.5, 2, 4, 4.5, 5)
    assert positions([0, 0.4, 0.5, 3.9, 7], (0, 1, 4)).tolist() == [0, 0, 0, 2, 2]
    # off-grid scores count as the nearest grid point for QWK: 0.9 is 1 on a 0..4 grid
    assert qwk([0.9, 2, 3], [1, 2, 3], GRID) == pytest.approx(1.0)
