"""Migrating a Flask app to pybind_serve: its routes, URLs and JSON contracts stay; the model call inside
each handler is dynamically batched across the requests that Flask's threads serve at the same time.

Bind the model to a `Serve` in the Flask process and call it through a `BatchedModel`; the handler keeps
its own parsing, validation and response building::

    serve = Serve(http_port=0, grpc_port=None, metrics_port=None)   # loopback HTTP only, on a free port
    serve.bind("scores", batch(lambda x: {"scores": predict(x)}), inputs=..., outputs=...)
    scores = BatchedModel(serve, "scores")

    @app.post("/predict")
    def predict_route():
        x = parse(request.get_json())
        y = scores(x=x[None])["scores"][0]                 # was: y = predict(x[None])[0]
        return jsonify(to_response(y))

    with serve:
        serve.run()
        app.run(threaded=True)                              # or gunicorn -w 1 --threads 32

Flask must serve requests in threads, or there is nothing to batch. Nothing here imports Flask: the same
`BatchedModel` serves any threaded WSGI framework. See ``docs/flask.md`` and ``examples/flask_migration``.
"""

from __future__ import annotations

from .batched import BatchedModel

__all__ = ["BatchedModel"]
