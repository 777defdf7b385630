"""H&M reader pieces that need no data files (the sample's own tests skip without it)."""

import numpy as np
import pytest

from mmf_rec.data import hm, protocol
from mmf_rec.schema import PAD_ID


def test_history_excludes_the_same_day_and_cold_items():
    counted = np.array([True, True, True, True, False])  # item 9 is cold
    user, item, day = (np.array([0, 0, 0, 1, 0]), np.array([5, 6, 7, 8, 9]),
                       np.array([1, 1, 2, 2, 3]))
    history = protocol.history_before(np.array([0, 0, 0, 1, 0]), np.array([1, 2, 3, 3, 4]),
                                      (user[counted], item[counted], day[counted]), 3)
    assert history.tolist() == [[PAD_ID] * 3, [6, 5, PAD_ID], [7, 6, 5], [8, PAD_ID, PAD_ID],
                                [7, 6, 5]]


def test_bad_config_is_one_clear_error():
    with pytest.raises(hm.HMDataError, match=r"unknown keys \['negatives'\]"):
        hm.HMConfig.from_mapping({"negatives": 4})
    with pytest.raises(hm.HMDataError, match=r"test_start: expected set together"):
        hm.HMConfig.from_mapping({"val_start": "2020-01-01"})
