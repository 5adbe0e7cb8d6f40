#!/bin/bash
# pixprompt on 2 nodes with torchrun: run this script on each node with NODE_RANK=0 and NODE_RANK=1.
# MASTER_ADDR is node 0's host name; torchrun starts one rank per GPU (--nproc-per-node).
set -euo pipefail
: "${NODE_RANK:?set NODE_RANK to 0 on the first node and 1 on the second}"
: "${MASTER_ADDR:?set MASTER_ADDR to the first node's host name}"

torchrun --nnodes 2 --node-rank "$NODE_RANK" --nproc-per-node "${GPUS_PER_NODE:-4}" \
    --master-addr "$MASTER_ADDR" --master-port "${MASTER_PORT:-29500}" \
    -m pixprompt classify /data/photos --model ViT-B-32 --pretrained openai \
    --labels-file classes.txt --output preds.parquet
