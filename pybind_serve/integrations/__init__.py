"""Optional bridges to other frameworks, imported only by those who ask for them (``import pybind_serve`` never
imports this package, nor Flask).

- `pybind_serve.integrations.flask`: keep a Flask app's routes while its model calls are dynamically batched.
"""
