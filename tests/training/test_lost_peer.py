"""A network partition between two workers (packets dropped, no reset), for real.

Each worker runs in its own network namespace; a veth pair joins them. Once
a checkpoint exists the link is cut on both ends (`blackhole` qdisc): both
workers must end by themselves, with status 3 and a message naming the
peer, within the coordination service's heartbeat bound, whatever the
collective timeout; after the link heals the same commands resume.
"""

import os
import re
import time

import pytest

from polynet_tf.training.cluster import EXIT_PEER_FAILED, HEARTBEAT_TIMEOUT_SECONDS
from tests.training.conftest import launch, overrides, train_command, wait_all

pytestmark = pytest.mark.slow

# Documented bound (docs/failures.md): the heartbeat timeout plus the time to
# abort the step; the slack is for a loaded test machine.
BOUND_SECONDS = HEARTBEAT_TIMEOUT_SECONDS + 20


def test_a_partition_ends_both_workers_quickly_and_a_restart_resumes(
        synthetic_shards, namespace_pair, tmp_path):
    model_dir = tmp_path / "run"
    params = overrides(synthetic_shards, **{
        "trainer.train_steps": 8, "trainer.steps_per_loop": 1,
        "trainer.checkpoint_interval": 2, "train_data.global_batch_size": 16,
        # Far above the bound: the collective timeout must play no part.
        "runtime.collective_timeout_seconds": 600, "runtime.startup_timeout_seconds": 120})
    hosts = [f"{address}:2222" for address in namespace_pair.addresses]

    def start(tag):
        return [launch(namespace_pair.prefix(i) + train_command(
            model_dir, params, worker_hosts=hosts, task_index=i), tmp_path / f"{tag}_{i}.log")
            for i in range(2)]

    workers = start("first")
    checkpoint = model_dir / "checkpoints" / "ckpt-2.index"
    deadline = time.time() + 600
    while not checkpoint.exists() and time.time() < deadline and workers[0].poll() is None:
        time.sleep(0.2)
    assert checkpoint.exists(), open(tmp_path / "first_0.log").read()[-3000:]
    namespace_pair.cut()
    codes, seconds = wait_all(workers, timeout=300)
    logs = [open(tmp_path / f"first_{i}.log").read() for i in range(2)]
    assert codes == [EXIT_PEER_FAILED] * 2, [log[-2000:] for log in logs]
    assert max(seconds) < BOUND_SECONDS, seconds
    # Each names the other (task and address) and says how to go on.
    for index, log in enumerate(logs):
        peer = 1 - index
        line = re.search(r"error: peer worker (.*)", log).group(1)
        assert f"/job:worker/task:{peer} ({hosts[peer]})" in line, line
        assert "Restart every worker with the same command" in line
        assert "Traceback" not in log
    saved = max(int(m) for m in re.findall(r"ckpt-(\d+)\.index",
                                            " ".join(os.listdir(model_dir / "checkpoints"))))
    assert 2 <= saved < 8

    namespace_pair.heal()
    workers = start("second")
    codes, _ = wait_all(workers, timeout=600)
    log = open(tmp_path / "second_0.log").read()
    assert codes == [0, 0], log[-3000:]
    assert re.search(rf"Resumed from \S+ckpt-{saved} at step {saved}\b", log), log[-3000:]
    assert "final step 8:" in log
