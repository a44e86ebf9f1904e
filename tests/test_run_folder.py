"""RunFolder's lock, in process: a second holder gets the dedicated error type (the study's grid
sharing catches it), and a released folder can be taken again."""

import os

import pytest

from qdukd.errors import QdukdError, RunFolderBusy
from qdukd.run_folder import RunFolder


def test_a_held_folder_refuses_a_second_holder_with_run_folder_busy(tmp_path):
    first = RunFolder(tmp_path / "run")
    first.acquire()
    try:
        with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()}"):
            RunFolder(tmp_path / "run").acquire()
    finally:
        first.release()
    second = RunFolder(tmp_path / "run")
    second.acquire()  # the lock went with the release
    second.release()


def test_a_file_in_the_way_is_bad_input_but_not_busy(tmp_path):
    (tmp_path / "run").write_text("not a folder")
    with pytest.raises(QdukdError, match="is a file") as e:
        RunFolder(tmp_path / "run").acquire()
    assert not isinstance(e.value, RunFolderBusy)
