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


def test_input_stamp_follows_the_content_not_the_modification_time(tmp_path):
    import hashlib
    import os
    import shutil

    from pipeline.io import input_stamp

    f = tmp_path / "predictions.parquet"
    write_parquet(f, pd.DataFrame({"p_up": [0.25, 0.75]}))
    stamp = input_stamp(f)
    assert stamp == {"bytes": f.stat().st_size, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: same content
    assert input_stamp(f) == stamp
    copy = tmp_path / "copy" / f.name
    copy.parent.mkdir()
    shutil.copy(f, copy)  # a copy (new mtime, new inode) identifies the same input
    assert input_stamp(copy) == stamp
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed, same size and mtime
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = input_stamp(f)
    assert changed["bytes"] == stamp["bytes"] and changed["sha256"] != stamp["sha256"]
    with pytest.raises(FileNotFoundError, match="nowhere.parquet"):
        input_stamp(tmp_path / "nowhere.parquet")
