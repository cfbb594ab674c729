"""Top-1 / top-5 accuracy, per class, and the evaluation report (JSON and text)."""

from typing import Any, Dict, List, Optional

import numpy as np

from polynet_tf import fileio


class AccuracyCounter:
    """Accumulates top-k hits per image and per class (host-side NumPy).

    Args:
      num_classes: number of classes of the models.
      top_k: the k of the second accuracy (5; fewer when there are fewer
        classes).
    """

    def __init__(self, num_classes: int, top_k: int = 5):
        self.num_classes = int(num_classes)
        self.top_k = min(int(top_k), self.num_classes)
        self._images = np.zeros(self.num_classes, np.int64)
        self._top1 = np.zeros(self.num_classes, np.int64)
        self._topk = np.zeros(self.num_classes, np.int64)

    def update(self, top_indices, labels) -> None:
        """Adds a batch.

        Args:
          top_indices: int `[batch, >= top_k]`, best class first.
          labels: int `[batch]`, the true classes.

        Raises:
          ValueError: for a label outside [0, num_classes).
        """
        top_indices = np.asarray(top_indices)[:, :self.top_k]
        labels = np.asarray(labels).astype(np.int64)
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if bad.size:
            raise ValueError(
                f"Label {int(bad[0])} is outside [0, {self.num_classes}) of the model's "
                "classes; check --label_offset (1 for TensorFlow's ImageNet shards) and "
                "that the data matches the model.")
        hit1 = top_indices[:, 0] == labels
        hitk = np.any(top_indices == labels[:, None], axis=1)
        self._images += np.bincount(labels, minlength=self.num_classes)
        self._top1 += np.bincount(labels, weights=hit1, minlength=self.num_classes).astype(
            np.int64)
        self._topk += np.bincount(labels, weights=hitk, minlength=self.num_classes).astype(
            np.int64)

    def counts(self) -> Dict[str, List[int]]:
        """The per-class counts (images, top-1 hits, top-k hits), JSON-ready.

        Sums of counts are exact, so counters of disjoint parts of a data set
        merged with `add_counts` give the report of the whole.
        """
        return {"top_k": self.top_k, "images": self._images.tolist(),
                "top1": self._top1.tolist(), "topk": self._topk.tolist()}

    def add_counts(self, counts: Dict[str, Any]) -> None:
        """Adds the `counts()` of another counter of the same classes and k.

        Raises:
          ValueError: counts of another number of classes or another k.
        """
        if int(counts["top_k"]) != self.top_k or len(counts["images"]) != self.num_classes:
            raise ValueError(
                f"Counts of {len(counts['images'])} classes and top-{counts['top_k']} "
                f"cannot be added to a counter of {self.num_classes} classes and "
                f"top-{self.top_k}.")
        for name, array in (("images", self._images), ("top1", self._top1),
                            ("topk", self._topk)):
            array += np.asarray(counts[name], np.int64)

    @property
    def num_images(self) -> int:
        return int(self._images.sum())

    def results(self, class_names: Optional[List[str]] = None) -> Dict[str, Any]:
        """Accuracies and errors overall and per class (classes with images only).

        Args:
          class_names: label -> name, for the per-class entries.

        Returns:
          A JSON-ready dict.
        """
        total = max(self.num_images, 1)
        top1 = float(self._top1.sum() / total)
        topk = float(self._topk.sum() / total)
        k = self.top_k
        per_class = []
        for label in np.flatnonzero(self._images):
            entry = {"label": int(label), "num_images": int(self._images[label]),
                     "top1_accuracy": float(self._top1[label] / self._images[label]),
                     f"top{k}_accuracy": float(self._topk[label] / self._images[label])}
            if class_names and label < len(class_names):
                entry["name"] = class_names[label]
            per_class.append(entry)
        return {
            "num_images": self.num_images,
            "top1_accuracy": top1, "top1_error": 1.0 - top1,
            f"top{k}_accuracy": topk, f"top{k}_error": 1.0 - topk,
            "per_class": per_class,
        }


def write_json_atomically(values: Dict[str, Any], path: str) -> str:
    """Writes JSON to a temporary name in the same folder, then renames it.

    Args:
      values: JSON-serialisable dict.
      path: final path or URI (`gs://...`).

    Returns:
      `path`.
    """
    fileio.write_json(path, values, sort_keys=False)
    return path


def summary_text(report: Dict[str, Any], worst_classes: int = 5) -> str:
    """A readable summary of an evaluation report.

    Args:
      report: what `Evaluator.evaluate` returned.
      worst_classes: how many of the least accurate classes to list.

    Returns:
      Multi-line text.
    """
    k = next((key for key in report if key.startswith("top") and key.endswith("_accuracy")
              and key != "top1_accuracy"), "top5_accuracy")
    protocol = report.get("protocol", {})
    lines = [
        f"Protocol: {protocol.get('name')} ({protocol.get('num_crops')} crop(s) per image, "
        f"{protocol.get('pooling')} pooling"
        + (f", top {protocol.get('topk')} of {protocol.get('crops_per_scale')} per scale"
           if protocol.get("pooling") == "topk" else "") + ")",
    ]
    for model in report.get("models", []):
        lines.append(f"Model: {model['description']} (weight {model['weight']:.3g})")
    lines += [
        f"Images: {report['num_images']}",
        f"Top-1: accuracy {100 * report['top1_accuracy']:.2f}%, error "
        f"{100 * report['top1_error']:.2f}%",
        f"Top-{k.split('_')[0][3:]}: accuracy {100 * report[k]:.2f}%, error "
        f"{100 * (1 - report[k]):.2f}%",
    ]
    if "images_per_second" in report:
        lines.append(f"Speed: {report['images_per_second']:.2f} images/s")
    worst = sorted(report["per_class"], key=lambda e: e["top1_accuracy"])[:worst_classes]
    if worst and len(report["per_class"]) > 1:
        lines.append("Least accurate classes (top-1): " + ", ".join(
            f"{e.get('name', e['label'])} {100 * e['top1_accuracy']:.1f}% "
            f"({e['num_images']})" for e in worst))
    return "\n".join(lines)
