"""The renderer against the authors' own images: shared/golden/render_cases.npz (891 windows).

Every image must agree byte for byte and every rejection status must agree (docs/golden.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.images.render import IMAGE_SHAPES, REJECTION_REASONS, render_windows


@pytest.fixture(scope="module")
def golden(golden_path):
    with np.load(golden_path) as z:  # no pickled objects in this file
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("window", [5, 20, 60])
def test_every_golden_case_byte_for_byte(golden, window):
    rows, n_hist = golden[f"rows_{window}"], golden[f"n_hist_{window}"]
    want_img, want_status = golden[f"image_{window}"], golden[f"status_{window}"]
    assert want_img.shape[1:] == IMAGE_SHAPES[window]

    images, status = render_windows(rows, n_hist, window)

    assert images.dtype == np.uint8 and status.dtype == np.int8
    assert images.shape == want_img.shape
    bad_status = np.flatnonzero(status != want_status)
    bad_image = np.flatnonzero((images != want_img).any(axis=(1, 2)))
    case = golden[f"case_type_{window}"]
    assert bad_status.size == 0, [(int(i), case[i], int(status[i]), int(want_status[i]))
                                  for i in bad_status[:10]]
    assert bad_image.size == 0, [(int(i), case[i], int((images[i] != want_img[i]).sum()))
                                 for i in bad_image[:10]]
    # ok_W is the same information as status == -1, and rejected images are all zero
    np.testing.assert_array_equal(status == -1, golden[f"ok_{window}"])
    assert not images[status != -1].any()
    assert set(np.unique(status[status != -1]).tolist()) <= set(REJECTION_REASONS)


def test_golden_cases_render_the_same_in_any_batch_order(golden):
    """Chunking and grouping by history length must not change a window's result: render the
    I20 cases reversed and interleaved with I20 cases from a copy, in small pieces."""
    rows, n_hist = golden["rows_20"], golden["n_hist_20"]
    order = np.random.default_rng(0).permutation(len(rows))
    images, status = render_windows(rows[order], n_hist[order], 20)
    np.testing.assert_array_equal(images, golden["image_20"][order])
    np.testing.assert_array_equal(status, golden["status_20"][order])
    for lo in range(0, 60, 7):  # tiny batches, including single windows
        img, st = render_windows(rows[lo:lo + 7], n_hist[lo:lo + 7], 20)
        np.testing.assert_array_equal(img, golden["image_20"][lo:lo + 7])
        np.testing.assert_array_equal(st, golden["status_20"][lo:lo + 7])


@pytest.mark.parametrize("window", [20, 60])
def test_golden_cases_with_many_small_chunks(golden, window, monkeypatch):
    """Force the smallest chunks (64 windows drawn at a time, 256 per arithmetic pass) so a batch
    spans several arithmetic chunks, each drawn in several pieces, in both history groups."""
    import pipeline.images.render as render
    monkeypatch.setattr(render, "_CHUNK_BYTES", 1)
    rows = np.concatenate([golden[f"rows_{window}"]] * 2)
    n_hist = np.concatenate([golden[f"n_hist_{window}"]] * 2)
    images, status = render_windows(rows, n_hist, window)
    np.testing.assert_array_equal(images, np.concatenate([golden[f"image_{window}"]] * 2))
    np.testing.assert_array_equal(status, np.concatenate([golden[f"status_{window}"]] * 2))
