#!/usr/bin/env bash
# Serves the models exported under MODELS_DIR (the export's --output_base) with TF Serving.
#   python -m polynet_tf.export --output_base "$PWD/models" --model_name polynet ...
#   bash export/docker_run.sh "$PWD/models"
# REST on :8501, gRPC on :8500. GPU: image tensorflow/serving:latest-gpu and --gpus all.
set -euo pipefail
MODELS_DIR="$(cd "${1:-$PWD/models}" && pwd)"
KIT_DIR="$(cd "$(dirname "$0")" && pwd)"
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
