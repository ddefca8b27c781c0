"""Recorders never lose anything silently: an existing file is refused without --force (case bag, PLUS
sequence, case.jsonl), and a message the bag writer cannot queue is counted in ``dropped``, so that every
message handed to it is either in the bag or in that count."""
from __future__ import annotations

import pytest

from spine_nav.bag.reader import read_bag
from spine_nav.bag.writer import BagWriter
from spine_nav.cli.main import main as cli

GUARD_STATUS = "spine_nav_interfaces/msg/GuardStatus"


@pytest.mark.parametrize("argv", [
    ["bag", "record", "--out", "{path}", "--duration", "0.1"],
    ["record", "--connect", "127.0.0.1:9", "--format", "plus", "--out", "{path}", "--duration", "0.1"],
    ["record", "--connect", "127.0.0.1:9", "--format", "jsonl", "--out", "{path}", "--duration", "0.1"],
], ids=["bag", "plus", "jsonl"])
def test_recorders_refuse_an_existing_file_without_force(tmp_path, capsys, argv):
    path = tmp_path / ("case.seq.mha" if "plus" in argv else "case.out")
    path.write_bytes(b"an earlier case")
    rc = cli([a.format(path=path) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert str(path) in err and "exists" in err and "--force" in err, err
    assert path.read_bytes() == b"an earlier case"


def test_bag_writer_force_overwrites_and_the_bag_reads_back(tmp_path):
    path = tmp_path / "case.mcap"
    path.write_bytes(b"an earlier case")
    with pytest.raises(FileExistsError, match="case.mcap"):
        BagWriter(path)
    w = BagWriter(path, force=True)
    w.add_topic("/guard/status", GUARD_STATUS)
    assert w.put("/guard/status", _status_cdr())
    w.close()
    contents, msgs = read_bag(path)
    assert not contents.truncated and contents.counts["/guard/status"] == 1 and len(msgs) == 1


def _status_cdr() -> bytes:
    """A serialized GuardStatus (rclpy's own serializer)."""
    from rclpy.serialization import serialize_message
    from spine_nav_interfaces.msg import GuardStatus

    return serialize_message(GuardStatus(state_name="ALIGNED", active_screw_id="L4_left"))


def test_a_full_write_queue_counts_every_dropped_message(tmp_path):
    path = tmp_path / "case.mcap"
    w = BagWriter(path, max_queue=10)
    w.add_topic("/guard/status", GUARD_STATUS)
    data = _status_cdr()
    n = 50
    # hold the writer thread off the file (it takes this lock for every message it writes): the queue fills
    with w._cv:  # noqa: SLF001 - the test stands in for a writer that cannot keep up
        accepted = [w.put("/guard/status", data) for _ in range(n)]
    w.close()
    # at most one message left the queue before the writer blocked: the rest of the 50 beyond the bound drop
    assert w.dropped >= n - 10 - 1 and w.dropped == accepted.count(False)
    assert w.counts["/guard/status"] == accepted.count(True)
    assert read_bag(path)[0].counts["/guard/status"] + w.dropped == n  # each message: in the bag, or counted

