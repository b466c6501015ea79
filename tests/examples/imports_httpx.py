"""A script that needs httpx, which the README's install lacks: `test_examples` checks that it fails so."""

import httpx

print(httpx.__version__)
