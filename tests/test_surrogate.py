import json
import logging

import numpy as np
import pytest

from cads_hf.surrogate import LossSurrogate


def test_loglinear_recovers_exponential_curve_exactly():
    sizes = np.array([50, 100, 300, 600, 900])
    losses = 2.0 * np.exp(-0.002 * sizes)
    surrogate = LossSurrogate(sizes.tolist(), losses.tolist(), kind="loglinear")
    grid = np.linspace(50, 900, 17)
    np.testing.assert_allclose(surrogate(grid), 2.0 * np.exp(-0.002 * grid), rtol=1e-8)


def test_spline_recovers_smooth_curve_between_points():
    curve = lambda n: 0.05 + 1.5 / np.sqrt(n)  # noqa: E731
    sizes = np.array([20, 60, 150, 400, 900, 1500])
    surrogate = LossSurrogate(sizes.tolist(), curve(sizes).tolist())
    grid = np.linspace(20, 1500, 40)
    np.testing.assert_allclose(surrogate(grid), curve(grid), rtol=0.05)
    assert surrogate.held_out_mse is not None and surrogate.held_out_mse < 1e-3


def test_queries_outside_range_are_clamped_with_warning(caplog):
    surrogate = LossSurrogate([10, 20, 40], [1.0, 0.8, 0.5])
    with caplog.at_level(logging.WARNING):
        value = surrogate([5, 100])
    assert "outside the measured range" in caplog.text
    np.testing.assert_allclose(value, [1.0, 0.5], rtol=1e-9)


def test_collect_trains_each_size_and_accounts_cost():
    seen = []

    def train_fn(n):
        seen.append(n)
        return 1.0 / n, 100.0

    surrogate = LossSurrogate.collect(train_fn, [10, 20, 40, 80], progress=False)
    assert seen == [10, 20, 40, 80]
    assert surrogate.cost == 400.0
    assert surrogate(20) == pytest.approx(0.05)


def test_save_load_round_trip_and_corruption(tmp_path):
    surrogate = LossSurrogate([10, 20, 40], [1.0, 0.8, 0.5], kind="spline", cost=12.0)
    surrogate.save(str(tmp_path))
    loaded = LossSurrogate.load(str(tmp_path))
    assert loaded.to_dict() == surrogate.to_dict()
    np.testing.assert_allclose(loaded([15, 30]), surrogate([15, 30]))
    path = tmp_path / "surrogate.json"
    path.write_text(path.read_text()[:20])
    with pytest.raises(ValueError, match="surrogate.json is corrupted or truncated"):
        LossSurrogate.load(str(tmp_path))


@pytest.mark.parametrize(
    "sizes,losses,message",
    [([10], [1.0], "at least two"), ([10, 10], [1.0, 0.9], "distinct"), ([10, 20], [1.0, float("nan")], "finite")],
)
def test_bad_points_are_rejected(sizes, losses, message):
    with pytest.raises(ValueError, match=message):
        LossSurrogate(sizes, losses)


def test_surrogate_file_is_readable_json(tmp_path):
    LossSurrogate([10, 20], [1.0, 0.5], kind="loglinear").save(str(tmp_path / "s.json"))
    assert json.loads((tmp_path / "s.json").read_text())["kind"] == "loglinear"
