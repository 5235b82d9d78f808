"""The online endpoint: registered models served on Ray Serve with the KServe / TF-Serving v1 protocol.

    python -m pipelines.serving NAME[:VERSION|:ALIAS] ... [--host 127.0.0.1] [--port 8000] [--replicas 1]

protocol.py   the v1 request and response bodies, and the 4xx answers to bad ones
instances.py  raw instances (a table row, a series, a prompt, an image) -> the model's inputs, through the
              preprocessing object in the checkpoint (as predict does), and its outputs -> predictions
model.py      one registered model loaded for serving: sha256-checked, weights-only; batches of requests
app.py        the Ray Serve deployments: one application per model, the model index, the alias poller
cli.py        start Ray and Serve, deploy, log version changes, stop everything on Ctrl-C/SIGTERM
"""
