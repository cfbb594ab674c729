"""What users see: a progress bar, log lines and TensorBoard summaries (chief only)."""

import time

import tensorflow as tf
from absl import logging
from tqdm import tqdm

from polynet_tf import runs


class Reporter:
    """Progress bar with loss, accuracy, learning rate and images/s; summaries.

    Args:
        model_dir: where `train/` and `eval/` summaries go.
        enabled: False on non-chief workers (they stay silent).
        total_steps: length of the progress bar.
        initial_step: where a resumed run starts.
    """

    def __init__(self, model_dir, enabled, total_steps, initial_step):
        self.enabled = enabled
        self._last_time = time.perf_counter()
        self._bar = None
        self._writers = {}
        if enabled:
            self._bar = tqdm(total=total_steps, initial=initial_step, unit="step",
                             dynamic_ncols=True, mininterval=1.0)
            for name in ("train", "eval"):
                self._writers[name] = tf.summary.create_file_writer(
                    runs.summaries_dir(model_dir, name))

    def train_loop_done(self, step, steps, images, metrics, summary=True):
        """Reports one training loop of `steps` steps and `images` images.

        The progress bar follows every loop; the `train/` summaries only
        loops with `summary` (the trainer: every `trainer.summary_interval`
        steps and the last step).
        """
        now = time.perf_counter()
        rate = images / max(now - self._last_time, 1e-9)
        self._last_time = now
        if not self.enabled:
            return
        self._bar.update(steps)
        self._bar.set_postfix(loss=f"{metrics['loss']:.4f}", top1=f"{metrics['top1']:.3f}",
                              lr=f"{metrics['learning_rate']:.3g}", img_s=f"{rate:.1f}")
        if summary:
            self.scalars("train", step, dict(metrics, images_per_second=rate))

    def scalars(self, writer, step, values):
        if not self.enabled:
            return
        with self._writers[writer].as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)
        self._writers[writer].flush()

    def message(self, text, *args):
        """Logs on the chief, above the progress bar."""
        if not self.enabled:
            return
        text = text % args if args else text
        if self._bar is not None:
            self._bar.write(text)
        logging.info(text)

    def reset_clock(self):
        self._last_time = time.perf_counter()

    def close(self):
        if self._bar is not None:
            self._bar.close()
        for writer in self._writers.values():
            writer.close()
