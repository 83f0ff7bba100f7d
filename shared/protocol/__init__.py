"""Wire codecs, free of any transport: bytes in, numpy arrays out, and back.

* ``v2``: Open Inference Protocol v2 REST inference, JSON and binary tensor data;
* ``metadata``: v2 server and model metadata bodies;
* ``score``: Azure ML / TF-Serving style ``/score`` payloads;
* ``status``: the one table from ``shared.errors`` to HTTP statuses, and error bodies;
* ``tensor_json`` / ``tensor_binary``: tensor data as JSON values / raw bytes;
* ``json_body``: JSON parsing and message helpers shared by the above.
"""
