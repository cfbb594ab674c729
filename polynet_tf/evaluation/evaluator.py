"""The evaluator: crops through one model or a weighted ensemble, pooled, scored.

For each batch of images (`data.crops_dataset`: `[batch, num_crops, size,
size, 3]`), each scale's crops go through the network as one batch of
`batch x crops_per_scale` crops (one scale at a time bounds memory: 288 crops
of 331x331 are 378 MB of input alone), the softmax scores are pooled per image
(`protocols.pool_scores`), and the models of an ensemble are combined by the
weighted mean of their pooled probabilities. All of it is one `tf.function`
run by `strategy.run`, so several devices each take part of the images.
"""

import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from polynet_tf.evaluation import metrics, protocols
from polynet_tf.evaluation.model_sources import Scorer


class Evaluator:
    """Evaluates scorers (one model or an ensemble) under a crop protocol.

    Args:
      scorers: one `Scorer` per model.
      protocol: the `CropProtocol`.
      model_weights: one positive weight per scorer (normalised to sum to 1);
        None: equal weights.
      strategy: a `tf.distribute.Strategy`; None: the default strategy. The
        scorers' models should have been built under its scope.

    Raises:
      ValueError: if the scorers disagree on the number of classes, a model's
        fixed input size is not the crop size, or the weights are invalid.
    """

    def __init__(self, scorers: Sequence[Scorer], protocol: protocols.CropProtocol,
                 model_weights: Optional[Sequence[float]] = None, strategy=None):
        if not scorers:
            raise ValueError("Evaluator needs at least one model.")
        model_weights = [1.0] * len(scorers) if model_weights is None else list(model_weights)
        if len(model_weights) != len(scorers) or any(w <= 0 for w in model_weights):
            raise ValueError(
                f"Need one positive weight per model ({len(scorers)}); received "
                f"{model_weights!r}.")
        classes = {s.num_classes for s in scorers}
        if len(classes) != 1:
            raise ValueError(
                "The models of an ensemble must have the same classes; they have "
                + ", ".join(f"{s.description}: {s.num_classes}" for s in scorers) + ".")
        for scorer in scorers:
            if scorer.input_size is not None and scorer.input_size != protocol.crop_size:
                raise ValueError(
                    f"{scorer.description} takes {scorer.input_size}x{scorer.input_size} "
                    f"images but protocol {protocol.name!r} makes {protocol.crop_size}x"
                    f"{protocol.crop_size} crops; set the crop size to "
                    f"{scorer.input_size}.")
        total = float(sum(model_weights))
        self.scorers = list(scorers)
        self.model_weights = [w / total for w in model_weights]
        self.protocol = protocol
        self.num_classes = classes.pop()
        self.strategy = strategy or tf.distribute.get_strategy()
        self.top_k = min(5, self.num_classes)
        self._step = tf.function(self._distributed_step)

    # ------------------------------------------------------------ the graph
    def predict(self, crops) -> tf.Tensor:
        """Pooled, ensembled probabilities of a batch of images' crops.

        Args:
          crops: float32 `[batch, num_crops, size, size, 3]` in [0, 255].

        Returns:
          float32 `[batch, classes]`.
        """
        protocol = self.protocol
        crops = tf.convert_to_tensor(crops, tf.float32)
        batch = tf.shape(crops)[0]
        size = protocol.crop_size
        per_scale = tf.reshape(crops, [batch, protocol.num_scales, protocol.crops_per_scale,
                                       size, size, 3])
        combined = None
        previous = []
        for scorer, weight in zip(self.scorers, self.model_weights):
            scale_scores = []
            for scale in range(protocol.num_scales):
                # Serialise the scales (and models): run in parallel, their
                # activations would all be alive at once.
                with tf.control_dependencies(previous):
                    network_batch = tf.reshape(per_scale[:, scale], [-1, size, size, 3])
                scores = tf.reshape(scorer(network_batch),
                                    [batch, protocol.crops_per_scale, self.num_classes])
                scale_scores.append(scores)
                previous = [scores]
            scores = tf.concat(scale_scores, axis=1) if len(scale_scores) > 1 else (
                scale_scores[0])
            pooled = weight * protocols.pool_scores(scores, protocol)
            combined = pooled if combined is None else combined + pooled
        return combined

    def _replica_step(self, crops, labels):
        probabilities = self.predict(crops)
        top = tf.math.top_k(probabilities, k=self.top_k).indices
        return top, labels

    def _distributed_step(self, crops, labels):
        return self.strategy.run(self._replica_step, args=(crops, labels))

    # ------------------------------------------------------------- the loop
    def evaluate(self, dataset: tf.data.Dataset, num_images: Optional[int] = None,
                 class_names: Optional[List[str]] = None,
                 progress: bool = True) -> Dict:
        """Runs over a dataset of `(crops, labels)` batches (`data.crops_dataset`).

        Args:
          dataset: batches of crops and labels; distributed over the
            strategy's replicas here.
          num_images: for the progress bar.
          class_names: label -> name for the per-class results.
          progress: show a tqdm progress bar (stderr).

        Returns:
          The report: `num_images`, `top1_accuracy`, `top1_error`,
          `top5_accuracy`, `top5_error`, `per_class`, `protocol`, `models`,
          `seconds`, `images_per_second`.
        """
        start = time.perf_counter()
        counter = self.count(dataset, num_images, progress)
        return self.report(counter, class_names, time.perf_counter() - start)

    def count(self, dataset: tf.data.Dataset, num_images: Optional[int] = None,
              progress: bool = True) -> metrics.AccuracyCounter:
        """The top-k hits of a dataset of `(crops, labels)` batches (see `evaluate`)."""
        from tqdm import tqdm  # noqa: PLC0415

        counter = metrics.AccuracyCounter(self.num_classes, self.top_k)
        distributed = self.strategy.experimental_distribute_dataset(dataset)
        bar = tqdm(total=num_images, unit="img", disable=not progress,
                   desc=f"evaluating ({self.protocol.name})")
        with bar:
            for crops, labels in distributed:
                top, labels = self._step(crops, labels)
                top = _gather(self.strategy, top)
                labels = _gather(self.strategy, labels)
                counter.update(top, labels)
                bar.update(len(labels))
        return counter

    def report(self, counter: metrics.AccuracyCounter,
               class_names: Optional[List[str]] = None, seconds: float = 0.0) -> Dict:
        """The report of `evaluate` from a counter (of one run, or merged parts)."""
        report = counter.results(class_names)
        report.update(
            protocol=self.protocol.to_dict(),
            models=self.describe_models(),
            replicas=self.strategy.num_replicas_in_sync,
            seconds=seconds,
            images_per_second=counter.num_images / seconds if seconds > 0 else None,
        )
        return report

    def describe_models(self) -> List[Dict]:
        """The models and their (normalised) ensemble weights, for reports."""
        return [{"description": s.description, "weight": w}
                for s, w in zip(self.scorers, self.model_weights)]


def default_batch_size(strategy, protocol: protocols.CropProtocol) -> int:
    """Images per step over all replicas: enough for about 32 crops per replica."""
    return strategy.num_replicas_in_sync * max(1, 32 // protocol.crops_per_scale)


def _gather(strategy, values) -> np.ndarray:
    parts = [np.asarray(v) for v in strategy.experimental_local_results(values)]
    return np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
