import pandas as pd
import pytest

from pipeline.io import atomic_path, is_done, mark_done, write_parquet


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "table.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary file left behind


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "t.parquet"
    write_parquet(target, pd.DataFrame({"a": [1, 2]}))
    assert pd.read_parquet(target)["a"].tolist() == [1, 2]
    write_parquet(target, pd.DataFrame({"a": [3]}))
    assert pd.read_parquet(target)["a"].tolist() == [3]


def test_done_markers_depend_on_settings_hash(tmp_path):
    assert not is_done(tmp_path, "abc")
    mark_done(tmp_path, "abc", rows=3)
    assert is_done(tmp_path, "abc")
    assert not is_done(tmp_path, "other")
    (tmp_path / "_DONE.json").write_text("{corrupt")
    assert not is_done(tmp_path, "abc")
