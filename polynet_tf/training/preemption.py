"""SIGTERM on any worker: every worker saves the same step, one step later, and exits.

Built on TensorFlow's `tf.distribute.experimental.PreemptionCheckpointHandler`.
Each training step is one `handler.run` call. The handler catches SIGTERM
(its signal handler runs in the main thread as soon as the step in flight
returns), publishes "save after step N + 1" in the coordination service's
key-value store, waits until every worker has acknowledged it, and before
the step after that calls our save and then our exit on every worker. So
the checkpoint is of the step that was running when the signal arrived plus
one more (a peer may already have begun that one: workers are at most one
step apart), whatever `trainer.steps_per_loop` is.

The handler agrees on the number of `run` calls, so a call must be one step:
a call that ran `steps_per_loop` steps inside one `tf.function` would let a
preempted job run up to a whole loop (100 steps of the released network)
before saving (docs/cluster.md has the figures).

The handler is given its own, empty checkpoint manager only so that it
restores nothing and adds nothing to our checkpoints: the trainer restores
(also fine-tuning and growing) and saves itself (`save_fn`), and the handler's
run counter starts from zero in every process, the same on every worker.
An error in a step (a bad record, say) is reported to every worker through
the coordination service (`handler.run` does it), so the peers stop at once
instead of waiting for a collective timeout.
"""

import logging as python_logging
import signal
import threading

import tensorflow as tf
from absl import logging

from polynet_tf import fileio


class Preempted(Exception):
    """Every worker saved the checkpoint of `step` after a SIGTERM; stop now.

    Args:
        step: the training step saved.
    """

    def __init__(self, step):
        super().__init__(f"preempted: saved the checkpoint of step {step}")
        self.step = step


class PreemptionHandler:
    """TensorFlow's preemption handler, saving with `save` and stopping with `Preempted`.

    Make it after the training state is restored and before the first step,
    on every worker, in the main thread (it installs a SIGTERM handler);
    run each training step through `run`; `close` when training is over.

    Args:
        strategy: the job's strategy.
        model_dir: the run's directory; the handler's own manager points at
            a sub-directory that is never written.
        save: callable taking no argument, saves the checkpoint (on every
            worker, as `Trainer.save`).
        current_step: callable returning the training step, for `Preempted`.
    """

    def __init__(self, strategy, model_dir, save, current_step):
        resolver = getattr(strategy, "cluster_resolver", None)
        if resolver is not None and not resolver.cluster_spec().as_dict():
            resolver = None  # one worker: the handler's local mode, no coordination service

        def exit_fn():
            raise Preempted(current_step())

        config = tf.distribute.experimental.TerminationConfig(
            exit_fn=exit_fn, save_fn=lambda *args, **kwargs: save(), grace_period=0)
        unused = tf.train.CheckpointManager(
            tf.train.Checkpoint(), fileio.join(model_dir, ".worker_tmp", "preemption_handler"),
            max_to_keep=1)
        _quiet_peer_watcher_errors()
        _shorten_error_propagation_log()
        self._previous_sigterm = signal.getsignal(signal.SIGTERM)
        self._handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            resolver, unused, termination_config=config)
        self._also_watch_sigterm()

    def _also_watch_sigterm(self):
        """SIGTERM too where TensorFlow watches only GCE maintenance events (GPU VMs).

        There (GKE GPU nodes included) TensorFlow polls the metadata server
        and leaves SIGTERM alone, but Kubernetes preempts with SIGTERM: it is
        routed to the handler's own SIGTERM entry point. Elsewhere TensorFlow
        installed that very handler already; on CPU-only GCE VMs TensorFlow
        switches the handler off (docs/cluster.md).
        """
        handler = self._handler
        active = hasattr(handler, "_received_own_sigterm")
        if active and signal.getsignal(signal.SIGTERM) == self._previous_sigterm:
            signal.signal(signal.SIGTERM, handler._sigterm_handler_fn)

    def run(self, step_function, *args):
        """Runs one training step; saves and raises `Preempted` when the job must stop."""
        return self._handler.run(step_function, *args)

    def close(self):
        """Stops the handler's thread that waits on the coordination service.

        TensorFlow stops it itself when it saves on preemption, otherwise only
        in the handler's finalizer (which that very thread keeps from running).
        Call it on every worker before they leave together at the end: a
        thread still waiting on the chief's service when the chief exits would
        fail. SIGTERM gets its previous handler back.
        """
        self._handler.__del__()  # TensorFlow's clean-up: wakes every worker's watcher
        signal.signal(signal.SIGTERM, self._previous_sigterm)


_WATCHER_THREAD_PREFIX = "PeerTerminationWatcher"  # TensorFlow names the thread so


def _quiet_peer_watcher_errors():
    """One log line, not a traceback, when the coordination service goes away.

    The handler's watcher thread waits on the chief's service; when a peer
    is lost the main thread already ends the process with a clear message,
    and the thread's own error would only add a traceback.
    """
    previous = threading.excepthook
    if getattr(previous, "polynet_tf_quiet", False):
        return

    def hook(args):
        if args.thread is not None and args.thread.name.startswith(_WATCHER_THREAD_PREFIX):
            logging.info("preemption watcher stopped: %s", str(args.exc_value).splitlines()[0])
            return
        previous(args)

    hook.polynet_tf_quiet = True
    threading.excepthook = hook


class _FirstLineOfPropagatedErrors(python_logging.Filter):
    """Cuts TensorFlow's "Propagating error to cluster: ..." log to its first line.

    `handler.run` logs the whole error, including the Python stack where the
    failing op was defined; the process's own one-line message follows.
    """

    def filter(self, record):
        if isinstance(record.msg, str) and record.msg.startswith("Propagating error to cluster"):
            record.msg, record.args = "Propagating error to cluster: %s", (
                str(record.args[-1]).strip().splitlines()[0][:200] if record.args else "",)
        return True


def _shorten_error_propagation_log():
    logger = tf.get_logger()
    if not any(isinstance(f, _FirstLineOfPropagatedErrors) for f in logger.filters):
        logger.addFilter(_FirstLineOfPropagatedErrors())
