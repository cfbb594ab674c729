#!/usr/bin/env bash
# Serves the models exported under MODELS_DIR (the export's --output_base) with TF Serving.
#   python -m polynet_tf.export --output_base "$PWD/models" --model_name polynet ...
#   bash export/docker_run.sh "$PWD/models"
# REST on :8501, gRPC on :8500. GPU: image tensorflow/serving:latest-gpu and --gpus all.
set -euo pipefail
MODELS_DIR="$(cd "${1:-$PWD/models}" && pwd)"
KIT_DIR="$(cd "$(dirname "$0")" && pwd)"
# Batching is on (batching_parameters.txt, pad_variable_length_inputs: false): TF Serving
# concatenates requests along dimension 0, so every signature must take inputs whose
# other dimensions are fixed. Exports with serve_images/serve_images_uint8 (any image
# size) are refused: export with --novariable_size_signatures (docs/failures.md).
unbatchable="$(grep -l '"batchable": false' "$MODELS_DIR"/*/[0-9]*/assets.extra/polynet_export.json 2>/dev/null || true)"
if [ -n "$unbatchable" ]; then
  echo "docker_run.sh: error: these exports have signatures of any image size, which TF Serving's" >&2
  echo "batching cannot batch; export again with --novariable_size_signatures:" >&2
  echo "$unbatchable" >&2
  exit 2
fi
exec docker run --rm -p 8500:8500 -p 8501:8501 \
  -v "$MODELS_DIR:/models:ro" \
  -v "$KIT_DIR/models.config:/config/models.config:ro" \
  -v "$KIT_DIR/batching_parameters.txt:/config/batching_parameters.txt:ro" \
  tensorflow/serving:latest \
  --model_config_file=/config/models.config \
  --model_config_file_poll_wait_seconds=60 \
  --file_system_poll_wait_seconds=30 \
  --enable_batching=true \
  --batching_parameters_file=/config/batching_parameters.txt
