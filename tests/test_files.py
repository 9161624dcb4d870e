from __future__ import annotations

import pytest

from emoknn.files import atomic_path, write_json_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "results.json"
    write_json_atomic({"wa": 0.5}, target)
    assert target.read_text() == '{\n  "wa": 0.5\n}\n'
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == '{\n  "wa": 0.5\n}\n'
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]
