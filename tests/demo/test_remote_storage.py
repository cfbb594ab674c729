"""The demo's tools on TensorFlow's in-memory `ram://` filesystem (read and written
through gfile)."""

import uuid

import tensorflow as tf

from polynet_tf import fileio
from polynet_tf.demo import curves, digits, predict
from tests.demo.test_report import PNG_SIGNATURE, _BrightnessClassifier


def test_digits_predictions_and_curves_on_ram(capsys):
    root = f"ram://demo-{uuid.uuid4().hex[:8]}"
    counts = digits.write_digits(f"{root}/digits", image_size=16, held_out_fraction=0.5,
                                 max_per_class=2)
    assert counts == {"train": 10, "held_out": 10}
    assert fileio.listdir(root) == ["digits"]  # the staging folder was moved, not left
    assert fileio.listdir(f"{root}/digits/held_out") == [str(d) for d in range(10)]

    module = _BrightnessClassifier()
    tf.saved_model.save(module, f"{root}/serving/toy/1",
                        signatures={"serving_default": module.serve})
    items = predict.list_labelled_images(f"{root}/digits/held_out")
    assert len(items) == 10 and items[0][0].startswith(f"{root}/digits/held_out/0/digit_")
    fileio.write_json(f"{root}/class_index.json", {"classes": ["bright", "dark"]})
    images = f"{root}/two_classes"
    for path, label in items[:2]:  # two digits re-filed under the brightness classes
        target = f"{images}/{'bright' if label == '0' else 'dark'}/{fileio.basename(path)}"
        fileio.makedirs(fileio.dirname(target))
        tf.io.gfile.copy(path, target)
    assert predict.main(["--saved_model", f"{root}/serving/toy/1", "--image_dir", images,
                         "--class_index", f"{root}/class_index.json",
                         "--page", f"{root}/report/predictions.png"]) == 0
    printed = capsys.readouterr().out
    assert "served model accuracy on 2 held-out images" in printed
    assert "dark/digit_" in printed  # paths printed relative to --image_dir
    assert fileio.read_bytes(f"{root}/report/predictions.png")[:8] == PNG_SIGNATURE

    writer = tf.summary.create_file_writer(f"{root}/run/train")
    with writer.as_default():
        for step in (10, 20):
            for tag in ("loss", "top1", "learning_rate"):
                tf.summary.scalar(tag, step / 100.0, step=step)
    writer.close()
    assert curves.main(["--model_dir", f"{root}/run", "--output", f"{root}/report/c.png"]) == 0
    assert fileio.read_bytes(f"{root}/report/c.png")[:8] == PNG_SIGNATURE
    assert fileio.listdir(f"{root}/report") == ["c.png", "predictions.png"]


def test_worker_logs_reach_a_uri_work_dir_also_when_a_step_fails():
    import pytest  # noqa: PLC0415

    from polynet_tf.demo import pipeline  # noqa: PLC0415

    work_dir = f"ram://demo-logs-{uuid.uuid4().hex[:8]}"
    fileio.makedirs(work_dir)
    pipeline._run_parallel([["python", "-c", "print('chief')"],
                            ["python", "-c", "print('worker one')"]], work_dir)
    assert fileio.read_text(f"{work_dir}/worker_1.log") == "worker one\n"
    with pytest.raises(pipeline.StepFailed, match=f"log: {work_dir}/worker_1.log"):
        pipeline._run_parallel([["python", "-c", "import time; time.sleep(30)"],
                                ["python", "-c", "print('failing'); raise SystemExit(3)"]],
                               work_dir)
    assert fileio.read_text(f"{work_dir}/worker_1.log") == "failing\n"
    assert fileio.listdir(work_dir) == ["worker_1.log"]
