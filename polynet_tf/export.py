"""Exports a PolyNet for TensorFlow Serving.

    python -m polynet_tf.export --output_base /models --model_name polynet \\
        --checkpoint runs/tiny --config official_configs/tiny_cpu.yaml
    python -m polynet_tf.export --output_base /models --model_name polynet \\
        --weights imagenet --architecture very_deep --multicrop polynet_multicrop

writes `/models/polynet/<next free version>/` (see `polynet_tf.serving`):
signatures `serving_default` (encoded images), `serve_images`,
`serve_images_uint8`, `serve_crops`, `serve_examples` and, with
`--multicrop`, `serving_multicrop`; warm-up requests and
`assets.extra/polynet_export.json`. Exit status 0 on success, 1 when the
export failed (nothing is left behind), 2 for bad arguments. Every path
(`--output_base`, `--checkpoint`, `--weights`, `--config`, `--class_names`,
`--warmup_image`) may be a URI such as `gs://bucket/models` (`tf.io.gfile`).
"""

import argparse
import sys


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m polynet_tf.export",
        description="Export a PolyNet as a SavedModel for TensorFlow Serving "
                    "(OUTPUT_BASE/MODEL_NAME/VERSION).")
    where = parser.add_argument_group("where")
    where.add_argument("--output_base", required=True,
                       help="directory TF Serving watches; the model goes in "
                            "OUTPUT_BASE/MODEL_NAME")
    where.add_argument("--model_name", required=True, help="the name clients use")
    where.add_argument("--version", type=int, default=None,
                       help="integer version (default: one more than the highest existing)")
    where.add_argument("--overwrite", action="store_true",
                       help="replace an existing --version")
    source = parser.add_argument_group("model source (one of --weights, --checkpoint)")
    source.add_argument("--weights", help="a .weights.h5 file, or 'imagenet'")
    source.add_argument("--checkpoint", help="training model_dir, checkpoints/ folder or prefix")
    source.add_argument("--config", action="append", default=[],
                        help="experiment YAML (repeatable; later files win)")
    source.add_argument("--params_override", default="", help="'a.b=1,c=2', applied last")
    source.add_argument("--architecture", help="preset name or stage spec (with --weights)")
    options = parser.add_argument_group("signatures")
    options.add_argument("--top_k", type=int, default=None,
                         help="classes in classes/labels/scores (default: 5, or fewer if the "
                              "model has fewer classes)")
    options.add_argument("--class_names", help="class_index.json, ImageNet index JSON, JSON "
                         "list or text file with one name per line")
    options.add_argument("--crop_size", type=int, default=None,
                         help="model input size (default: eval_data.image_size or the preset's)")
    options.add_argument("--protocol", default=None,
                         choices=("single", "released", "released_pytorchcv",
                                  "released_squash"),
                         help="single-crop protocol (default: the config's eval_protocol, "
                              "'released' for very_deep presets: shorter side to 378, "
                              "centre 331)")
    options.add_argument("--multicrop", default=None,
                         help="add serving_multicrop with this evaluator protocol "
                              "(googlenet144, polynet_multicrop)")
    options.add_argument("--multicrop_override", default="",
                         help="protocol fields, e.g. 'scales=[96,128],topk_fraction=0.5'")
    options.add_argument("--warmup_image", action="append", default=[],
                         help="an image file for the warm-up requests (repeatable; "
                              "default: a synthetic JPEG)")
    options.add_argument("--fold_batch_norms", action="store_true",
                         help="serve the network with every BatchNorm folded into its conv "
                              "(same outputs, a third fewer ops; checked against the original)")
    options.add_argument("--no_verify", action="store_true",
                         help="skip loading the written SavedModel to check it")
    return parser


def _multicrop_protocol(name, override_text, crop_size):
    from polynet_tf.configs import base  # noqa: PLC0415
    from polynet_tf.evaluation import protocols  # noqa: PLC0415

    overrides = {"crop_size": crop_size, **base.parse_overrides(override_text)}
    return protocols.get_protocol(name, **overrides)


def main(argv=None):
    """Runs the export; returns the exit status."""
    args = _parser().parse_args(argv)
    # Imported after parsing: --help answers without loading TensorFlow.
    import tensorflow as tf  # noqa: PLC0415

    from polynet_tf import fileio  # noqa: PLC0415
    from polynet_tf.serving import exporter, signatures, sources  # noqa: PLC0415

    try:
        loaded = sources.load_export_model(
            weights=args.weights, checkpoint=args.checkpoint, config_files=args.config,
            params_override=args.params_override, architecture=args.architecture,
            class_names_file=args.class_names, crop_size=args.crop_size,
            protocol=args.protocol)
        multicrop = None
        if args.multicrop:
            multicrop = _multicrop_protocol(args.multicrop, args.multicrop_override,
                                            loaded.preprocessing.crop_size)
        options = signatures.SignatureOptions(
            preprocessing=loaded.preprocessing, class_names=loaded.class_names,
            top_k=args.top_k or min(5, len(loaded.class_names)),
            model_outputs=loaded.model_outputs, multicrop=multicrop)
        warmup_images = [fileio.read_bytes(path) for path in args.warmup_image]
    except (ValueError, FileNotFoundError, OSError, tf.errors.OpError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        result = exporter.export_saved_model(
            loaded.model, args.output_base, args.model_name, options, version=args.version,
            overwrite=args.overwrite, warmup_images=warmup_images or None,
            description=loaded.description, verify=not args.no_verify,
            fold_batch_norms=args.fold_batch_norms)
    except (FileExistsError, ValueError) as error:
        # Raised before anything is written: bad arguments.
        print(f"error: {error}", file=sys.stderr)
        return 2
    except exporter.ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Exported {args.model_name!r} version {result.version} to {result.path}")
    print(f"signatures: {', '.join(result.signatures)}")
    names_source = loaded.description["class_names_source"]
    print(f"classes: {len(loaded.class_names)} ({names_source}), preprocessing: "
          f"{loaded.preprocessing.protocol} at {loaded.preprocessing.crop_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
