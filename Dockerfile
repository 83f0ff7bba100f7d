# The scoring image: one Azure Functions (Python 3.11) app with APP_ROLE=scoring, run by
# Azure Container Apps (kind 'functionapp') on a serverless GPU workload profile
# (infra/bicep/modules/scoring.bicep). Build it in the registry with
#   make models && az acr build --registry <registry> --image scorefn-scoring:<tag> --file Dockerfile .
# (`scorefn deploy` does both).
#
# Models are BAKED IN: models/ (model.yaml, hooks, config.pbtxt and the ONNX files that
# `make models` builds) is copied to /home/site/wwwroot/models, which is SCOREFN_MODELS_DIR.
# A new model version means a new image tag and a new revision: what a revision serves is
# exactly what was tested, and a scale-from-zero replica needs no storage round trip before
# it can load its models. (Pulling from the `models` blob container at start is not done.)
FROM mcr.microsoft.com/azure-functions/python:4-python3.11

ENV AzureWebJobsScriptRoot=/home/site/wwwroot \
    AzureFunctionsJobHost__Logging__Console__IsEnabled=true \
    APP_ROLE=scoring \
    SCOREFN_MODELS_DIR=/home/site/wwwroot/models \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Runtime dependencies: requirements.txt minus build/test tools, plus the CUDA 13 and
# cuDNN 9 wheels onnxruntime-gpu needs on the GPU (the [cuda,cudnn] extras, ../shared/ENV.md).
# The onnxruntime-gpu pin must equal requirements.txt's (tests/infra checks it).
COPY requirements.txt /tmp/requirements.txt
RUN grep -viE '^(onnxruntime-gpu|pytest|pytest-asyncio|hypothesis|ruff|mypy|types-|scikit-learn|skl2onnx)([=\[ ]|$)' \
        /tmp/requirements.txt > /tmp/runtime-requirements.txt \
    && pip install -r /tmp/runtime-requirements.txt "onnxruntime-gpu[cuda,cudnn]==1.31.1" \
    && rm /tmp/requirements.txt /tmp/runtime-requirements.txt

COPY host.json function_app.py /home/site/wwwroot/
COPY functions/ /home/site/wwwroot/functions/
COPY shared/ /home/site/wwwroot/shared/
COPY models/ /home/site/wwwroot/models/
