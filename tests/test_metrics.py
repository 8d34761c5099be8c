import numpy as np
import pytest

from lmbench.core.errors import DataError
from lmbench.evaluate.metrics import radial_errors, summarize


def test_errors_use_each_images_spacing():
    truth = np.zeros((2, 2, 2))
    predicted = np.array([[[3.0, 4.0], [0.0, 1.0]], [[6.0, 8.0], [0.0, 0.0]]])  # 5, 1 and 10, 0 pixels
    errors = radial_errors(predicted, truth, [0.1, 0.5], "mm")
    np.testing.assert_allclose(errors, [[0.5, 0.1], [5.0, 0.0]])


def test_pixel_units_ignore_spacing():
    errors = radial_errors(np.array([[[3.0, 4.0]]]), np.zeros((1, 1, 2)), [None], "px")
    np.testing.assert_allclose(errors, [[5.0]])


def test_mm_without_spacing_is_an_error():
    with pytest.raises(DataError, match="no pixel spacing"):
        radial_errors(np.zeros((1, 1, 2)), np.zeros((1, 1, 2)), [None], "mm")


def test_summary_by_hand():
    errors = np.array([[1.0, 2.0], [2.5, 4.0]])  # images x landmarks
    rows = {(m, lm): v for m, lm, v in summarize(errors, [2.0, 2.5], ["a", "b"])}
    assert rows[("mre", "all")] == pytest.approx(2.375)
    assert rows[("mre", "a")] == pytest.approx(1.75)
    assert rows[("mre", "b")] == pytest.approx(3.0)
    assert rows[("mre_std", "all")] == pytest.approx(np.std([1.0, 2.0, 2.5, 4.0]))
    # SDR counts distance <= threshold: 2.0 is a success at 2 mm, 2.5 at 2.5 mm
    assert rows[("sdr@2", "all")] == pytest.approx(50.0)
    assert rows[("sdr@2.5", "all")] == pytest.approx(75.0)
    assert rows[("sdr@2", "b")] == pytest.approx(50.0)
    assert rows[("sdr@2.5", "a")] == pytest.approx(100.0)
