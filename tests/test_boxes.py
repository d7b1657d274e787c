"""Box IoU and NMS (models/detection/boxes.py): hand-made boxes whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from models.detection.boxes import NMS_IOU, iou, nms


def test_iou_of_hand_made_pairs() -> None:
    square = [0, 0, 10, 10]
    cases = {
        (0, 0, 10, 10): 1.0,  # itself
        (5, 0, 15, 10): 50 / 150,  # half overlapping: 50 shared of 150
        (0, 0, 5, 5): 25 / 100,  # inside: its own area over the square's
        (10, 0, 20, 10): 0.0,  # touching edges share nothing (exclusive ends)
        (30, 30, 40, 40): 0.0,  # apart
        (2, 2, 2, 8): 0.0,  # no area
    }
    got = iou(np.array([square]), np.array(list(cases)))
    assert got.shape == (1, len(cases))
    np.testing.assert_allclose(got[0], list(cases.values()), atol=1e-12)


def test_iou_is_a_matrix_of_every_pair_and_takes_single_boxes() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 20, 20]])
    b = np.array([[0, 0, 10, 10], [10, 10, 20, 20], [0, 0, 4, 5]])
    expected = [[1.0, 0.0, 0.2], [0.25, 0.25, 0.05]]
    np.testing.assert_allclose(iou(a, b), expected, atol=1e-12)
    np.testing.assert_allclose(iou(b, a), np.transpose(expected), atol=1e-12)
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)).shape == (1, 1)  # one box, (4,)
    assert iou(np.zeros((0, 4)), a).shape == (0, 2)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    dets = np.array([[0, 0, 10, 10, 0.5], [1, 1, 11, 11, 0.9], [50, 50, 60, 60, 0.3]])
    kept = nms(dets, 0.4)
    np.testing.assert_allclose(kept[:, 4], [0.9, 0.3])
    assert kept.dtype == np.float32 and kept.shape == (2, 5)
    np.testing.assert_allclose(kept[0, :4], [1, 1, 11, 11])


def test_nms_threshold_is_strict_and_suppression_is_greedy() -> None:
    # a-b overlap by 1/3, b-c by 1/3, a-c not at all
    a, b, c = [0, 0, 10, 10, 0.9], [5, 0, 15, 10, 0.8], [10, 0, 20, 10, 0.7]
    dets = np.array([c, a, b])
    # above 1/3 nothing is suppressed; sorted by score
    np.testing.assert_allclose(nms(dets, 0.34)[:, 4], [0.9, 0.8, 0.7])
    # below it b goes with a, and c, overlapping only the suppressed b, stays
    np.testing.assert_allclose(nms(dets, 0.33)[:, 4], [0.9, 0.7])
    # an IoU equal to the threshold is kept (suppression needs more than it)
    same = np.array([[0, 0, 10, 10, 0.9], [0, 0, 10, 5, 0.8]])  # IoU 0.5
    assert len(nms(same, 0.5)) == 2 and len(nms(same, 0.49)) == 1


def test_nms_ties_keep_the_input_order_and_empty_input_is_empty() -> None:
    dets = np.array([[0, 0, 10, 10, 0.5], [1, 0, 11, 10, 0.5], [40, 0, 50, 10, 0.5]])
    np.testing.assert_allclose(nms(dets, 0.4)[:, 0], [0, 40])  # the first of a tie wins
    np.testing.assert_allclose(nms(dets[[1, 0, 2]], 0.4)[:, 0], [1, 40])
    assert nms(np.zeros((0, 5))).shape == (0, 5)


def test_nms_default_threshold_is_nms_iou() -> None:
    assert NMS_IOU == pytest.approx(0.4)
    # IoU 0.5 > 0.4: dropped by default; IoU 1/3 < 0.4: kept
    dets = np.array([[0, 0, 10, 10, 0.9], [0, 0, 10, 5, 0.8], [5, 0, 15, 10, 0.7]])
    np.testing.assert_allclose(nms(dets)[:, 4], [0.9, 0.7])
