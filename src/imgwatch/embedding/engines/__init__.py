"""Inference engines faster than torch eager on a CPU, built from the same torchvision network.

``contract`` says what every engine offers the Embedder (the surface of EmbeddingModel);
``onnx_cache`` exports the network to ONNX once and keeps the file; each engine module runs
that file with one runtime and never imports another engine. ``selection`` builds one by name.
"""
