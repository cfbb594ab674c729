"""A bad record on one of two workers: one line and status 5 there, 3 on its peer, at once.

Training record 5 is record 1 of shard 1, which only worker 1 reads (file
sharding: worker i reads shards i, i + 2). Jobs run side by side. Skipped
bad records (on_error=skip) are counted in test_sigterm.py's killed-then-preempted
job, which trains on such data.
"""

import os

import pytest

from polynet_tf.training.cluster import EXIT_BAD_DATA, EXIT_PEER_FAILED, HEARTBEAT_TIMEOUT_SECONDS
from tests.training.conftest import free_ports, launch, overrides, train_command, wait_all
from tests.training.synthetic_data import write_dataset

pytestmark = pytest.mark.slow

STEPS = 20  # 128 records per worker and epoch at 8 per step: every record is met by step 16


def _start(tmp_path, tag, bad):
    shards = write_dataset(str(tmp_path / f"{tag}_data"), num_train=256, num_val=64,
                           bad_train_records={5: bad})
    params = overrides(shards, **{
        "trainer.train_steps": STEPS, "trainer.steps_per_loop": 4,
        "trainer.checkpoint_interval": 1000, "train_data.global_batch_size": 16,
        "train_data.on_error": "fail", "runtime.collective_timeout_seconds": 600,
        "runtime.startup_timeout_seconds": 180})
    hosts = [f"localhost:{port}" for port in free_ports(2)]
    bad_file = os.path.join(str(tmp_path / f"{tag}_data"), "train-00001-of-00004")
    return bad_file, [launch(train_command(tmp_path / f"{tag}_run", params, worker_hosts=hosts,
                                           task_index=i), tmp_path / f"{tag}_{i}.log")
                      for i in range(2)]


def test_a_bad_record_or_label_on_one_worker_ends_both_with_one_line(tmp_path):
    image_file, image_job = _start(tmp_path, "image", "garbage")
    label_file, label_job = _start(tmp_path, "label", 7)
    codes, seconds = wait_all(image_job + label_job, timeout=900)
    logs = {tag: [open(tmp_path / f"{tag}_{i}.log").read() for i in range(2)]
            for tag in ("image", "label")}
    assert codes == [EXIT_PEER_FAILED, EXIT_BAD_DATA] * 2, {
        tag: [log[-1500:] for log in pair] for tag, pair in logs.items()}
    expected = {
        "image": f"error: file {image_file} record 1: could not be parsed, or its image "
                 "could not be decoded.",
        "label": f"error: label 7 (after subtracting label_offset) of file {label_file} "
                 "record 1 is outside [0, 4).",
    }
    for tag, (peer_log, bad_log) in logs.items():
        errors = [line for line in bad_log.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and errors[0].startswith(expected[tag]), errors
        peer_errors = [line for line in peer_log.splitlines() if line.startswith("error: ")]
        assert len(peer_errors) == 1, peer_errors
        assert peer_errors[0].startswith("error: peer worker /job:worker/task:1 (localhost:")
        assert "met bad data: " + expected[tag][len("error: "):] in peer_errors[0]
        assert "Traceback" not in peer_log + bad_log
    # The peer follows within the lost-peer bound of the one that met the record.
    assert abs(seconds[0] - seconds[1]) < HEARTBEAT_TIMEOUT_SECONDS, seconds
    assert abs(seconds[2] - seconds[3]) < HEARTBEAT_TIMEOUT_SECONDS, seconds
