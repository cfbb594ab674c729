"""Exports a PolyNet for TensorFlow Serving.

    python -m polynet_tf.export --output_base /models --model_name polynet \\
        --checkpoint runs/tiny --config official_configs/tiny_cpu.yaml
    python -m polynet_tf.export --output_base /models --model_name polynet \\
        --weights imagenet --architecture very_deep --multicrop polynet_multicrop

writes `/models/polynet/<next free version>/` (see `polynet_tf.serving`):
signatures `serving_default` (encoded images), `serve_images`,
`serve_images_uint8`, `serve_crops`, `serve_examples` and, with
`--multicrop`, `serving_multicrop`; warm-up requests and
`assets.extra/polynet_export.json`.

    python -m polynet_tf.export --format litert --output_base /models \
        --model_name polynet --weights imagenet --architecture very_deep \
        --quantize int8 --calibration_data 'train/train-*' --calibration_images 200

writes one file, `/models/polynet[_int8|_float16].tflite` (`--format litert`)
or `.onnx` (`--format onnx`), with `FILE.json` beside it: the input contract
(crop, mean/std), class names and the checks' figures, also stored inside
the file (see `polynet_tf.serving.portable`). `--quantize int8` (LiteRT or
ONNX) calibrates on the first `--calibration_images` images of
`--calibration_data` and reports its size and top-1 agreement with the float
model on the next `--held_out_images`; `--quantize float16`: LiteRT.

Exit status 0 on success, 1 when the export failed (nothing is left behind),
2 for bad arguments (nothing is written). Every path (`--output_base`,
`--checkpoint`, `--weights`, `--config`, `--class_names`, `--warmup_image`,
`--calibration_data`) may be a URI such as `gs://bucket/models`
(`tf.io.gfile`).
"""

from absl import flags

from polynet_tf import cli
from polynet_tf.data import protocols

_PROG = "python -m polynet_tf.export"


FLAGS = flags.FlagValues()  # This command's flags (its own: commands share a process in tests).
# what
flags.DEFINE_enum("format", "saved_model", ["saved_model", "litert", "onnx"],
                  "saved_model: a TF Serving version folder; litert: one .tflite file (LiteRT "
                  "interpreter, pip install 'polynet-tf[litert]'); onnx: one .onnx file (ONNX "
                  "Runtime, pip install 'polynet-tf[onnx]').", flag_values=FLAGS)
flags.DEFINE_enum("quantize", "none", ["none", "float16", "int8"],
                  "Post-training quantization of a litert or onnx file: int8 (calibrated on "
                  "--calibration_data), float16 (litert weights).", flag_values=FLAGS)
flags.DEFINE_string("calibration_data", None, "Training TFRecord shards (a glob) whose images "
                    "calibrate --quantize int8.", flag_values=FLAGS)
flags.DEFINE_integer("calibration_images", 200, "Images of --calibration_data that calibrate.",
                     lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("held_out_images", 100, "Further images of --calibration_data on which "
                     "the quantized model's top-1 agreement with the float model is measured.",
                     lower_bound=0, flag_values=FLAGS)
# where
flags.DEFINE_string("output_base", None, "Directory TF Serving watches; the model goes "
                    "in OUTPUT_BASE/MODEL_NAME.", flag_values=FLAGS)
flags.DEFINE_string("model_name", None, "The name clients use (the file name of a litert "
                    "or onnx export).", flag_values=FLAGS)
flags.DEFINE_integer("version", None, "Integer version >= 1 (default: one more than the "
                     "highest existing).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_bool("overwrite", False, "Replace an existing --version (the new version "
                  "is written beside it and swapped in; see docs/failures.md).", flag_values=FLAGS)
# model source (one of --weights, --checkpoint)
flags.DEFINE_string("weights", None, "A .weights.h5 file, or 'imagenet'.", flag_values=FLAGS)
flags.DEFINE_string("checkpoint", None, "Training model_dir, checkpoints/ folder or "
                    "prefix.", flag_values=FLAGS)
flags.DEFINE_enum("weights_kind", "auto", ["auto", "ema", "raw"], "With --checkpoint: 'auto' "
                  "exports the EMA of the weights when the run kept one (trainer.ema_decay), "
                  "'raw' the trained weights.", flag_values=FLAGS)
flags.DEFINE_multi_string("config", [], "Experiment YAML (repeatable; later files win).",
                          flag_values=FLAGS)
flags.DEFINE_string("params_override", "", "'a.b=1,c=2', applied last.", flag_values=FLAGS)
flags.DEFINE_string("architecture", None, "Preset name or stage spec (with --weights).",
                    flag_values=FLAGS)
# signatures
flags.DEFINE_integer("top_k", None, "Classes in classes/labels/scores (default: 5, or "
                     "fewer if the model has fewer classes).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_string("class_names", None, "class_index.json, ImageNet index JSON, JSON "
                    "list or text file with one name per line.", flag_values=FLAGS)
flags.DEFINE_integer("image_size", None, "Model input size (default: "
                     "eval_data.image_size or the preset's).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_alias("crop_size", "image_size", flag_values=FLAGS)  # deprecated
flags.DEFINE_enum("protocol", None, list(protocols.SINGLE_CROP_PROTOCOLS)
                  + list(protocols.PROTOCOL_ALIASES),
                  "Single-crop protocol (default: the config's eval_protocol, the "
                  "published weights' for presets: 'squash' for very_deep, the whole image "
                  "squashed to 378x378, centre 331).", flag_values=FLAGS)
flags.DEFINE_string("multicrop", None, "Add serving_multicrop with this evaluator "
                    "protocol (googlenet144, polynet_multicrop).", flag_values=FLAGS)
flags.DEFINE_string("multicrop_override", "", "Protocol fields, e.g. "
                    "'scales=[96,128],topk_fraction=0.5'.", flag_values=FLAGS)
flags.DEFINE_multi_string("warmup_image", [], "An image file for the warm-up requests "
                          "(repeatable; default: a synthetic JPEG).", flag_values=FLAGS)
flags.DEFINE_bool("fold_batch_norms", None, "Serve the network with every BatchNorm "
                  "folded into its conv (same outputs, a third fewer ops; checked against "
                  "the original). Default: fold every network PolyNet() builds, serve "
                  "others as they are; --fold_batch_norms: fold or fail; "
                  "--nofold_batch_norms: never fold.", flag_values=FLAGS)
flags.DEFINE_bool("variable_size_signatures", True, "Add serve_images and "
                  "serve_images_uint8 (pixel tensors of any size). TF Serving's batching "
                  "(export/ kit) cannot batch them: export for it with "
                  "--novariable_size_signatures.", flag_values=FLAGS)
flags.DEFINE_bool("verify", True, "Load the written SavedModel to check it "
                  "(--noverify skips it).", flag_values=FLAGS)
flags.mark_flag_as_required("output_base", flag_values=FLAGS)
flags.mark_flag_as_required("model_name", flag_values=FLAGS)


def _multicrop_protocol(name, override_text, crop_size):
    from polynet_tf.configs import base  # noqa: PLC0415
    from polynet_tf.evaluation import protocols  # noqa: PLC0415

    overrides = {"crop_size": crop_size, **base.parse_overrides(override_text)}
    return protocols.get_protocol(name, **overrides)


def main(argv=None):
    """Runs the export; returns the exit status (0 done, 1 export failed, 2 bad arguments)."""
    return cli.run(_PROG, __doc__, FLAGS, _run, argv, usage_errors=())


def _run(args):
    # Imported after parsing: --help answers without loading TensorFlow.
    import tensorflow as tf  # noqa: PLC0415

    from polynet_tf import fileio  # noqa: PLC0415
    from polynet_tf.serving import exporter, signatures  # noqa: PLC0415

    if args.format != "saved_model":
        return _run_portable(args)
    if args.quantize != "none":
        return cli.fail(_PROG, f"--quantize {args.quantize} applies to --format litert or onnx; "
                        "a SavedModel is exported in float32.")
    try:
        loaded = _load(args)
        multicrop = None
        if args.multicrop:
            multicrop = _multicrop_protocol(args.multicrop, args.multicrop_override,
                                            loaded.contract.image_size)
        options = signatures.SignatureOptions(
            contract=loaded.contract, class_names=loaded.class_names,
            top_k=args.top_k or min(5, len(loaded.class_names)),
            model_outputs=loaded.model_outputs, multicrop=multicrop,
            variable_size_signatures=args.variable_size_signatures)
        warmup_images = [fileio.read_bytes(path) for path in args.warmup_image]
    except (ValueError, FileNotFoundError, OSError, tf.errors.OpError) as error:
        return cli.fail(_PROG, str(error))
    try:
        result = exporter.export_saved_model(
            loaded.model, args.output_base, args.model_name, options, version=args.version,
            overwrite=args.overwrite, warmup_images=warmup_images or None,
            description=loaded.description, verify=args.verify,
            fold_batch_norms=args.fold_batch_norms)
    except (FileExistsError, ValueError) as error:
        # Raised before anything is written: bad arguments.
        return cli.fail(_PROG, str(error))
    except exporter.ExportError as error:
        return cli.fail(_PROG, str(error), status=1)
    print(f"Exported {args.model_name!r} version {result.version} to {result.path}")
    print(f"signatures: {', '.join(result.signatures)}")
    names_source = loaded.description["class_names_source"]
    print(f"classes: {len(loaded.class_names)} ({names_source}), input: "
          f"{loaded.contract.describe()}")
    return 0


# Flags of the SavedModel export only (name -> what a litert / onnx file does instead).
_SAVED_MODEL_ONLY = {
    "version": "the file is OUTPUT_BASE/MODEL_NAME.tflite|.onnx",
    "multicrop": "the file takes crops; multi-crop is the caller's",
    "warmup_image": "the file's check runs random and real images",
    "top_k": "the file returns every class probability",
}


def _load(args):
    from polynet_tf.serving import sources  # noqa: PLC0415

    return sources.load_export_model(
        weights=args.weights, checkpoint=args.checkpoint, config_files=args.config,
        params_override=args.params_override, architecture=args.architecture,
        class_names_file=args.class_names, image_size=args.image_size,
        protocol=args.protocol, weights_kind=args.weights_kind)


def _run_portable(args):
    """`--format litert|onnx`: one checked file (polynet_tf.serving.portable)."""
    import tensorflow as tf  # noqa: PLC0415

    from polynet_tf.serving import exporter, portable, signatures  # noqa: PLC0415
    from polynet_tf.serving.calibration import read_calibration_images  # noqa: PLC0415

    for name, instead in _SAVED_MODEL_ONLY.items():
        if FLAGS[name].present:
            return cli.fail(_PROG, f"--{name} applies to --format saved_model only ({instead}).")
    if args.quantize != "int8" and args.calibration_data:
        return cli.fail(_PROG, "--calibration_data calibrates --quantize int8 only.")
    try:
        loaded = _load(args)
        options = signatures.SignatureOptions(
            contract=loaded.contract, class_names=loaded.class_names,
            top_k=min(5, len(loaded.class_names)), model_outputs=loaded.model_outputs)
        # The request is checked before the calibration images are read (they take a while).
        portable.check_request(loaded.model, args.format, args.quantize,
                               has_calibration=bool(args.calibration_data))
        calibration = None
        if args.calibration_data:
            calibration = read_calibration_images(
                args.calibration_data, loaded.contract, args.calibration_images,
                args.held_out_images)
        result = portable.export_portable(
            loaded.model, args.output_base, args.model_name, args.format, options,
            quantize=args.quantize, calibration=calibration, overwrite=args.overwrite,
            description=loaded.description, fold_batch_norms=args.fold_batch_norms)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError, OSError,
            tf.errors.OpError) as error:
        return cli.fail(_PROG, str(error))
    except exporter.ExportError as error:
        return cli.fail(_PROG, str(error), status=1)
    print(f"Exported {args.model_name!r} ({args.format}, {args.quantize}) to {result.path}; "
          f"metadata: {result.metadata_path}")
    print(f"classes: {len(loaded.class_names)}, input: {loaded.contract.describe()}")
    for line in portable.describe_checks(result.metadata["checks"]):
        print(line)
    return 0


if __name__ == "__main__":
    cli.app_run(main)
